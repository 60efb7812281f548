// The service worker that saves downloads as streams, so memory does not grow with the file.
//
// The page cannot hand a stream to the browser's download manager, but a service worker can: the
// page registers a one-time ticket here (token, file, whether to decrypt) over a MessageChannel, then
// points a hidden frame at transfer/<ticket>. That request comes here; the answer is the ciphertext
// fetched from the API, decrypted segment by segment on its way through (decrypt.js), with
// Content-Disposition: attachment, so the browser writes it to disk as it arrives. Progress, the end
// and failures go back to the page over the ticket's port. A failure errors the stream: the browser
// then marks the download failed and keeps no file under its name, so a wrong key, altered or cut
// data never leave a "successful" partial file behind.
//
// Tickets live only in this worker's memory, for a minute, and are used once; the token in a ticket
// never leaves the browser except to the API, as on the page.

import { api, ApiError } from "./api.js";
import { DecryptionError, decryptStream, importKey } from "./decrypt.js";
import { SealedKeyError } from "./identity.js";
import { fileKey } from "./keys.js";

const TICKET_LIFETIME_MS = 60_000;
const PROGRESS_INTERVAL_MS = 100;
const tickets = new Map();

self.addEventListener("install", (event) => event.waitUntil(self.skipWaiting()));
// Take over the page that registered us at once, so that its first download can already stream.
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

self.addEventListener("message", (event) => {
  const { data } = event;
  // Anything else (the page's pings during a long download) only keeps this worker awake.
  if (data?.type !== "ticket" || event.ports.length !== 1) return;
  const port = event.ports[0];
  tickets.set(data.ticket, { ...data, port });
  setTimeout(() => tickets.delete(data.ticket), TICKET_LIFETIME_MS);
  port.postMessage({ type: "ready" });
});

self.addEventListener("fetch", (event) => {
  const prefix = new URL("transfer/", self.registration.scope).href;
  if (!event.request.url.startsWith(prefix)) return; // everything else goes to the network as usual
  const id = event.request.url.slice(prefix.length);
  const ticket = tickets.get(id);
  tickets.delete(id);
  if (!ticket) {
    const gone = "This download has expired: start it again from the page.\n";
    event.respondWith(new Response(gone, { status: 410, headers: { "Content-Type": "text/plain" } }));
    return;
  }
  event.respondWith(transfer(ticket));
});

async function transfer({ token, account, id, name, size, decrypt, port }) {
  try {
    // The key first: a 404 for it (not the owner) must stop the download before any byte is saved.
    const key = decrypt ? await importKey(await fileKey(token, id, account)) : null;
    const response = await api.ciphertext(token, id);
    const stored = Number(response.headers.get("Content-Length"));
    let body = response.body.pipeThrough(counter(port, stored));
    if (key) body = body.pipeThrough(decryptStream(key));
    port.postMessage({ type: "started", total: stored });
    const headers = {
      "Content-Type": "application/octet-stream",
      "Content-Disposition": attachment(decrypt ? name : `${name}.enc`),
      // The browser fails the download if fewer bytes arrive than announced.
      "Content-Length": String(decrypt ? size : stored),
      "Cache-Control": "no-store",
    };
    return new Response(reporting(body, port), { headers });
  } catch (err) {
    port.postMessage(failure(err));
    // A navigation answered 204 goes nowhere: the page shows the error instead.
    return new Response(null, { status: 204 });
  }
}

// Passes ciphertext through unchanged, telling the page how much has arrived.
function counter(port, total) {
  let received = 0;
  let last = 0;
  return new TransformStream({
    transform(chunk, controller) {
      received += chunk.byteLength;
      const now = Date.now();
      if (now - last >= PROGRESS_INTERVAL_MS || received === total) {
        last = now;
        port.postMessage({ type: "progress", received, total });
      }
      controller.enqueue(chunk);
    },
  });
}

// The body handed to the browser: one chunk at a time from `source`, with the outcome reported to
// the page, and a cancel from the page (or the browser's download bar) stopping the transfer.
function reporting(source, port) {
  const reader = source.getReader();
  let finished = false;
  const finish = (message) => {
    if (finished) return false;
    finished = true;
    port.postMessage(message);
    return true;
  };
  return new ReadableStream(
    {
      start(controller) {
        port.onmessage = (event) => {
          if (event.data?.type !== "cancel") return;
          if (finish({ type: "cancelled" })) {
            reader.cancel().catch(() => {});
            controller.error(new DOMException("Download cancelled", "AbortError"));
          }
        };
      },
      async pull(controller) {
        let step;
        try {
          step = await reader.read();
        } catch (err) {
          if (finish(failure(err))) controller.error(err);
          return;
        }
        if (finished) return;
        if (step.done) {
          finish({ type: "done" });
          controller.close();
        } else {
          controller.enqueue(step.value);
        }
      },
      cancel(reason) {
        finish({ type: "cancelled" });
        return reader.cancel(reason);
      },
    },
    { highWaterMark: 1 },
  );
}

function failure(err) {
  if (err instanceof ApiError || err instanceof DecryptionError || err instanceof SealedKeyError) {
    return { type: "error", status: err.status ?? null, message: err.message };
  }
  // A body that stops mid-way: the network or the server went away.
  return {
    type: "error",
    status: 0,
    message: "The connection was cut during the download; nothing was saved. Try again.",
  };
}

// RFC 6266 with RFC 8187, as the API writes it: any file name survives.
function attachment(filename) {
  const fallback = filename.replace(/[^A-Za-z0-9._ -]/g, "_") || "file";
  return `attachment; filename="${fallback}"; filename*=UTF-8''${encodeURIComponent(filename)}`;
}
