// Uploads over tus 1.0 (the server's /uploads/): create, then one PATCH whose body is the rest of
// the file, resumed from the server's offset after a cut (here) or a reload (the next time the same
// file is picked). Every answer goes through api.js, so refusals read as sentences.
//
// Our own small client rather than tus-js-client: the page needs four requests, one PATCH at a
// time, errors as api.js's ApiError (a 401 must reach the login form), and no bundle to load as a
// global beside the modules. The server's offsets move by whole 1 MiB segments: a PATCH body is
// always the whole rest of the file, so whatever the server keeps, the next PATCH goes on from it.

import { ApiError, apiUrl, call, xhrError } from "./api.js";

const TUS = { "Tus-Resumable": "1.0.0" };
// After a cut: HEAD, then PATCH from the server's offset; the budget refills whenever bytes landed.
const RETRY_DELAYS_MS = [500, 1000, 2000, 4000, 8000];
// 409: the request the cut left behind still holds the upload, or our offset was stale.
const TRANSIENT = new Set([0, 408, 409, 423, 429, 502, 503, 504]);
// An upload that cannot go on: the server's copy is removed rather than left to expire.
const HOPELESS = new Set([400, 403, 413, 415, 460]);

// The unfinished uploads of this browser, so that picking the same file again after a reload goes
// on where it stopped. Only the upload's id and its expiry: it is useless without the token (any
// other account gets 404), so localStorage may keep it across tabs for the day the server does.
const PREFIX = "cryptofiles.upload:";
const remembered = {
  key: (user, file) => PREFIX + JSON.stringify([user, file.name, file.size, file.lastModified]),
  get(key) {
    try {
      const entry = JSON.parse(localStorage.getItem(key) ?? "null");
      if (entry && typeof entry.id === "string" && entry.expires > Date.now()) return entry.id;
    } catch {
      // Unreadable: forgotten below like an expired one.
    }
    localStorage.removeItem(key);
    return null;
  },
  keep(key, id, expires) {
    const until = Date.parse(expires ?? "") || Date.now() + 24 * 3600 * 1000;
    try {
      localStorage.setItem(key, JSON.stringify({ id, expires: until }));
    } catch {
      // Storage refused (full, or disabled): this upload still runs, it just cannot be resumed.
    }
  },
  forget: (key) => localStorage.removeItem(key),
};

const base64 = (text) => btoa(String.fromCharCode(...new TextEncoder().encode(text)));

const GONE = "The upload is no longer on the server (expired or removed): pick the file again.";

const aborted = () => new DOMException("Upload cancelled", "AbortError");

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    const stop = () => {
      clearTimeout(timer);
      reject(aborted());
    };
    signal.addEventListener("abort", stop, { once: true });
  });
}

// Offline, no attempt can succeed: wait for the network rather than spend the retries.
function online(signal) {
  if (globalThis.navigator?.onLine !== false) return Promise.resolve();
  return new Promise((resolve, reject) => {
    globalThis.addEventListener("online", resolve, { once: true });
    signal.addEventListener("abort", () => reject(aborted()), { once: true });
  });
}

function offsetOf(value, size) {
  const offset = Number(value);
  if (!Number.isSafeInteger(offset) || offset < 0 || offset > size) {
    throw new ApiError(502, "The server's answer to the upload made no sense.");
  }
  return offset;
}

// `upload({token, user, file, onProgress, onResume, onRetry})` -> {done, cancel}. `done` resolves
// with the new file's id (the upload's id); cancel() removes everything the server holds for it and
// rejects `done` with an AbortError. onResume(offset, size) when a remembered upload goes on.
export function upload({ token, user, file, onProgress, onResume, onRetry }) {
  const controller = new AbortController();
  const signal = controller.signal;
  const key = remembered.key(user, file);
  const auth = { token, headers: TUS };
  let id = null;
  let xhr = null;

  const path = () => `uploads/${encodeURIComponent(id)}`;

  // The server's offset, or null if what it holds is not this file's upload.
  async function head() {
    const response = await call(path(), { ...auth, method: "HEAD", signal });
    if (Number(response.headers.get("Upload-Length")) !== file.size) return null;
    return offsetOf(response.headers.get("Upload-Offset"), file.size);
  }

  // The remembered upload's offset, or null when there is none to go on with.
  async function resumable() {
    id = remembered.get(key);
    if (id === null) return null;
    let offset = null;
    try {
      offset = await head();
    } catch (err) {
      if (!(err instanceof ApiError) || err.status !== 404) throw err;
    }
    if (offset === null) {
      remembered.forget(key); // expired, or finished and deleted since
      id = null;
    }
    return offset;
  }

  async function create() {
    const metadata = [["filename", file.name], ["filetype", file.type]]
      .filter(([, value]) => value)
      .map(([name, value]) => `${name} ${base64(value)}`)
      .join(",");
    const headers = { ...TUS, "Upload-Length": String(file.size) };
    if (metadata) headers["Upload-Metadata"] = metadata;
    // Not abortable: a cancel while it runs still learns the id, to remove the upload.
    const response = await call("uploads/", { token, method: "POST", headers });
    const location = response.headers.get("Location") ?? "";
    id = decodeURIComponent(new URL(location, apiUrl("uploads/")).pathname.split("/").pop());
    if (!id) throw new ApiError(502, "The server's answer to the upload made no sense.");
    remembered.keep(key, id, response.headers.get("Upload-Expires"));
  }

  // One PATCH of the rest of the file from `offset`; the browser streams the slice from disk.
  function patch(offset) {
    return new Promise((resolve, reject) => {
      if (signal.aborted) {
        reject(aborted());
        return;
      }
      xhr = new XMLHttpRequest();
      xhr.open("PATCH", apiUrl(path()));
      xhr.responseType = "json";
      for (const [name, value] of Object.entries(TUS)) xhr.setRequestHeader(name, value);
      xhr.setRequestHeader("Accept", "application/json");
      xhr.setRequestHeader("x-access-tokens", token);
      xhr.setRequestHeader("Upload-Offset", String(offset));
      xhr.setRequestHeader("Content-Type", "application/offset+octet-stream");
      const sent = (event) => onProgress(offset + event.loaded, file.size);
      xhr.upload.addEventListener("progress", sent);
      xhr.addEventListener("load", () => {
        if (xhr.status !== 204) reject(xhrError(xhr));
        else resolve(offsetOf(xhr.getResponseHeader("Upload-Offset"), file.size));
      });
      xhr.addEventListener("error", () => reject(xhrError(xhr)));
      xhr.addEventListener("abort", () => reject(aborted()));
      xhr.send(file.slice(offset));
    });
  }

  async function send(offset) {
    let attempt = 0;
    let stale = false;
    while (stale || offset < file.size) {
      try {
        if (stale) {
          const kept = await head();
          if (kept === null) throw new ApiError(404, GONE);
          if (kept > offset) attempt = 0; // the cut PATCH got somewhere: not a dead network
          [offset, stale] = [kept, false];
        }
        if (offset === file.size) break;
        const next = await patch(offset);
        if (next <= offset) throw new ApiError(502, "The server accepted none of the upload.");
        onProgress(next, file.size);
        offset = next;
        attempt = 0;
      } catch (err) {
        if (signal.aborted || !TRANSIENT.has(err.status) || attempt >= RETRY_DELAYS_MS.length) {
          throw err;
        }
        const delay = err.retryAfter !== null ? err.retryAfter * 1000 : RETRY_DELAYS_MS[attempt];
        attempt += 1;
        onRetry(delay);
        await sleep(delay, signal);
        await online(signal);
        stale = true; // the server kept what it could of the cut PATCH: ask how much
      }
    }
  }

  async function run() {
    let offset = await resumable();
    if (offset === null) {
      await create();
      offset = 0;
    } else {
      onResume(offset, file.size);
    }
    await send(offset);
    remembered.forget(key);
    return id;
  }

  // Removes the server's copy, also while the PATCH just aborted is still being stored there; if
  // that fails, the upload expires there (Upload-Expires) all the same.
  async function terminate() {
    remembered.forget(key);
    await call(path(), { ...auth, method: "DELETE" }).catch(() => {});
  }

  const done = run().catch(async (err) => {
    if (id !== null && (signal.aborted || HOPELESS.has(err.status) || err.status === 404)) {
      await terminate();
    }
    if (signal.aborted) throw aborted();
    throw err instanceof ApiError && err.status === 404 ? new ApiError(404, GONE) : err;
  });
  return {
    done,
    cancel() {
      controller.abort();
      xhr?.abort();
    },
  };
}
