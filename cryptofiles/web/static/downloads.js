// Saving a file, decrypted in this browser or as ciphertext: through the service worker (sw.js)
// as a stream to disk, or, where no service worker can run, through memory up to BLOB_LIMIT.

import { api, ApiError } from "./api.js";
import { decryptStream, importKey } from "./decrypt.js";
import { fileKey } from "./keys.js";

// Without a service worker the whole plaintext is assembled in memory before it is saved; above
// this size the page refuses instead of exhausting the tab (README says so).
export const BLOB_LIMIT = 256 * 1024 * 1024;
const READY_TIMEOUT_MS = 5_000;
const START_TIMEOUT_MS = 20_000;
const PING_INTERVAL_MS = 10_000;

let worker = Promise.resolve(null);

// Registers sw.js; resolves to the worker controlling this page, or null where there can be none
// (no service worker support, a page not served over HTTPS or from localhost, private modes).
export function startWorker() {
  if (!("serviceWorker" in navigator) || !window.isSecureContext) return worker;
  const registered = navigator.serviceWorker
    .register("sw.js", { type: "module", scope: "./" })
    .then(() => navigator.serviceWorker.ready)
    .then(() => controller())
    .catch(() => null);
  // A browser that blocks workers may leave the registration pending for ever.
  const givenUp = new Promise((resolve) => setTimeout(() => resolve(null), 2 * READY_TIMEOUT_MS));
  worker = Promise.race([registered, givenUp]);
  return worker;
}

function controller() {
  const { serviceWorker } = navigator;
  if (serviceWorker.controller) return serviceWorker.controller;
  // sw.js claims its pages when it activates; a hard reload runs the page without it.
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(null), READY_TIMEOUT_MS);
    serviceWorker.addEventListener("controllerchange", () => {
      clearTimeout(timer);
      resolve(serviceWorker.controller);
    });
  });
}

// Starts saving `file` (the API's description of it). `onProgress(received, total)` counts
// ciphertext bytes. Returns { done, cancel }: done resolves once the last byte is handed to the
// browser, rejects with an ApiError, a DecryptionError or an AbortError (after cancel()).
export function save({ token, account, file, decrypt, onProgress }) {
  const cancelled = new AbortController();
  const how = { token, account, file, decrypt, onProgress, signal: cancelled.signal };
  const done = worker.then((sw) => (sw ? viaWorker(sw, how) : viaMemory(how)));
  return { done, cancel: () => cancelled.abort() };
}

function viaWorker(sw, { token, account, file, decrypt, onProgress, signal }) {
  const channel = new MessageChannel();
  const port = channel.port1;
  const ticket = crypto.randomUUID();
  const frame = document.createElement("iframe");
  frame.hidden = true;
  frame.title = "download";
  let ping = null;
  let timer = null;

  const outcome = new Promise((resolve, reject) => {
    const fail = (err) => reject(err);
    timer = setTimeout(() => fail(new Error(
      "The download did not start. Reload the page and try again.")), START_TIMEOUT_MS);
    signal.addEventListener("abort", () => port.postMessage({ type: "cancel" }));
    port.onmessage = ({ data }) => {
      switch (data.type) {
        case "ready":
          frame.src = `transfer/${ticket}`;
          document.body.append(frame);
          break;
        case "started":
          clearTimeout(timer);
          onProgress(0, data.total);
          break;
        case "progress":
          onProgress(data.received, data.total);
          break;
        case "done":
          resolve();
          break;
        case "cancelled":
          reject(new DOMException("Download cancelled", "AbortError"));
          break;
        case "error":
          fail(new ApiError(data.status ?? 0, data.message));
          break;
      }
    };
  });
  sw.postMessage(
    { type: "ticket", ticket, token, account, id: file.id, name: file.name || file.id,
      size: file.size, decrypt },
    [channel.port2],
  );
  // A worker with nothing to do may be stopped; messages keep it awake during a long download.
  ping = setInterval(() => sw.postMessage({ type: "ping" }), PING_INTERVAL_MS);
  return outcome.finally(() => {
    clearTimeout(timer);
    clearInterval(ping);
    port.close();
    // The browser keeps downloading after the frame is gone; remove it a little later all the same.
    setTimeout(() => frame.remove(), 1_000);
  });
}

async function viaMemory({ token, account, file, decrypt, onProgress, signal }) {
  const size = decrypt ? file.size : file.stored_size;
  if (size > BLOB_LIMIT) {
    throw new Error(
      "This browser cannot save a download as a stream here (no service worker: the page must be " +
        "served over HTTPS or from localhost), and files over 256 MiB are not assembled in memory. " +
        "Use the command-line client for this file.",
    );
  }
  const key = decrypt ? await importKey(await fileKey(token, file.id, account)) : null;
  const response = await api.ciphertext(token, file.id, signal);
  const total = Number(response.headers.get("Content-Length"));
  let received = 0;
  let body = response.body.pipeThrough(
    new TransformStream({
      transform(chunk, controller) {
        received += chunk.byteLength;
        onProgress(received, total);
        controller.enqueue(chunk);
      },
    }),
  );
  if (key) body = body.pipeThrough(decryptStream(key));
  const parts = [];
  const reader = body.getReader();
  for (;;) {
    const { done, value } = await reader.read(); // rejects on any failure: nothing is saved then
    if (done) break;
    parts.push(value);
  }
  const url = URL.createObjectURL(new Blob(parts, { type: "application/octet-stream" }));
  const link = document.createElement("a");
  link.href = url;
  link.download = decrypt ? file.name || file.id : `${file.name || file.id}.enc`;
  link.hidden = true;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}
