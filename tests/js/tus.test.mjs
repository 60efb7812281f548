// The page's tus client (cryptofiles/web/static/tus.js) against a small in-memory tus server: what
// it sends after a cut, after a reload, on cancel, and how refusals reach the page. Run by
// tests/test_page_scripts.py with Node's test runner. The real server and browser are the browser
// tests' business (tests/browser/test_page_uploads.py); here every request can be inspected.

import assert from "node:assert/strict";
import { beforeEach, test } from "node:test";

import { ApiError } from "../../cryptofiles/web/static/api.js";
import { upload } from "../../cryptofiles/web/static/tus.js";

const SEGMENT = 10; // the fake server keeps whole 10-byte segments (the real one: 1 MiB ones)
const TOKEN = "token-1";

let server;

function freshServer() {
  return {
    uploads: new Map(), // id -> {length, offset, bytes, name}
    log: [], // [method, offset or null]
    cuts: [], // the next PATCHes' connections die after so many body bytes, one each
    hang: false, // the next PATCH never answers (the page is reloaded meanwhile)
    refuse: new Map(), // method -> [status, detail] for the next such request
    nextId: 1,
  };
}

class MemoryStorage {
  #items = new Map();
  getItem = (key) => (this.#items.has(key) ? this.#items.get(key) : null);
  setItem = (key, value) => this.#items.set(key, String(value));
  removeItem = (key) => this.#items.delete(key);
  get length() {
    return this.#items.size;
  }
}

function problem(status, detail) {
  return new Response(JSON.stringify({ status, detail }), {
    status,
    headers: { "Content-Type": "application/problem+json" },
  });
}

function idOf(url) {
  return decodeURIComponent(new URL(url).pathname.split("/").pop());
}

function refusal(method) {
  const refused = server.refuse.get(method);
  server.refuse.delete(method);
  return refused;
}

globalThis.fetch = async (url, init) => {
  const method = init.method;
  server.log.push([method, null]);
  assert.equal(init.headers["Tus-Resumable"], "1.0.0");
  assert.equal(init.headers["x-access-tokens"], TOKEN);
  const refused = refusal(method);
  if (refused) return problem(...refused);
  if (method === "POST") {
    const id = `upload-${server.nextId++}`;
    const name = init.headers["Upload-Metadata"]?.split(",")[0].split(" ")[1];
    const length = Number(init.headers["Upload-Length"]);
    server.uploads.set(id, { length, offset: 0, bytes: new Uint8Array(length), name });
    const headers = { Location: `http://elsewhere.example/uploads/${id}` };
    return new Response(null, { status: 201, headers });
  }
  const found = server.uploads.get(idOf(url));
  if (!found) return problem(404, "Not found.");
  if (method === "HEAD") {
    const headers = {
      "Upload-Offset": String(found.offset),
      "Upload-Length": String(found.length),
    };
    return new Response(null, { status: 200, headers });
  }
  if (method === "DELETE") {
    server.uploads.delete(idOf(url));
    return new Response(null, { status: 204 });
  }
  throw new Error(`unexpected ${method}`);
};

// The PATCH side of the same server, as the browser's XMLHttpRequest would reach it.
globalThis.XMLHttpRequest = class {
  upload = new EventTarget();
  #events = new EventTarget();
  #headers = {};
  #answer = {};
  status = 0;
  response = null;
  open(method, url) {
    assert.equal(method, "PATCH");
    this.url = url;
  }
  setRequestHeader(name, value) {
    this.#headers[name] = value;
  }
  getResponseHeader(name) {
    return this.#answer[name] ?? null;
  }
  addEventListener(type, listener) {
    this.#events.addEventListener(type, listener);
  }
  abort() {
    this.aborted = true;
    this.#events.dispatchEvent(new Event("abort"));
  }
  async send(body) {
    const offset = Number(this.#headers["Upload-Offset"]);
    server.log.push(["PATCH", offset]);
    assert.equal(this.#headers["Content-Type"], "application/offset+octet-stream");
    const found = server.uploads.get(idOf(this.url));
    const bytes = new Uint8Array(await body.arrayBuffer());
    const progress = new Event("progress");
    progress.loaded = Math.floor(bytes.length / 2);
    this.upload.dispatchEvent(progress);
    await new Promise((resolve) => setTimeout(resolve, 1));
    if (this.aborted) return;
    const refused = refusal("PATCH");
    if (refused) {
      [this.status, this.response] = [refused[0], { detail: refused[1] }];
      this.#events.dispatchEvent(new Event("load"));
      return;
    }
    assert.equal(offset, found.offset, "a PATCH from an offset the server does not have");
    let arrived = bytes.length;
    const cut = server.cuts.length > 0;
    if (cut) arrived = Math.min(arrived, server.cuts.shift());
    if (server.hang) {
      server.hang = false;
      arrived = Math.min(arrived, 3 * SEGMENT + 5);
    }
    let kept = offset + arrived === found.length ? arrived : arrived - (arrived % SEGMENT);
    if (offset + kept > found.length) kept = found.length - offset;
    found.bytes.set(bytes.subarray(0, kept), offset);
    found.offset += kept;
    if (arrived < bytes.length) {
      if (!cut) return; // hangs: the page goes away before any answer
      this.#events.dispatchEvent(new Event("error")); // status stays 0
      return;
    }
    this.status = 204;
    this.#answer = { "Upload-Offset": String(found.offset) };
    this.#events.dispatchEvent(new Event("load"));
  }
};

globalThis.navigator ??= {};

const content = Uint8Array.from({ length: 95 }, (_, i) => (i * 7) % 256);
const file = new File([content], "notes é.txt", {
  type: "text/plain",
  lastModified: 1700000000000,
});

function start(options = {}) {
  const calls = { progress: [], resumed: [], retries: [] };
  const running = upload({
    token: TOKEN,
    user: "alice",
    file,
    onProgress: (sent, total) => calls.progress.push([sent, total]),
    onResume: (offset, total) => calls.resumed.push([offset, total]),
    onRetry: (delay) => calls.retries.push(delay),
    ...options,
  });
  return { ...running, calls };
}

beforeEach(() => {
  server = freshServer();
  globalThis.localStorage = new MemoryStorage();
});

test("a whole upload: one POST, one PATCH of the whole file, the id from Location", async () => {
  const { done, calls } = start();
  const id = await done;
  assert.equal(id, "upload-1");
  assert.deepEqual(server.log, [["POST", null], ["PATCH", 0]]);
  const stored = server.uploads.get(id);
  assert.deepEqual(stored.bytes, content);
  assert.equal(Buffer.from(stored.name, "base64").toString(), "notes é.txt");
  assert.deepEqual(calls.progress.at(-1), [95, 95]);
  assert.equal(localStorage.length, 0); // finished: nothing left to resume
});

test("a cut mid-PATCH: HEAD, then the rest from the server's offset", async () => {
  server.cuts = [47]; // the server keeps 40 bytes: four whole segments
  const { done, calls } = start();
  assert.equal(await done, "upload-1");
  assert.deepEqual(server.log, [["POST", null], ["PATCH", 0], ["HEAD", null], ["PATCH", 40]]);
  assert.deepEqual(server.uploads.get("upload-1").bytes, content);
  assert.equal(calls.retries.length, 1);
  assert.deepEqual(calls.resumed, []);
  // Progress: within the first PATCH, back to what the server kept, then on to the end.
  assert.deepEqual(calls.progress.map(([sent]) => sent), [47, 40 + 27, 95]);
});

test("offline, the retries wait for the network instead of running out", async () => {
  const page = new EventTarget(); // the window's "online" event
  globalThis.addEventListener = page.addEventListener.bind(page);
  globalThis.navigator.onLine = false;
  try {
    server.cuts = [33];
    const { done, calls } = start();
    await new Promise((resolve) => setTimeout(resolve, 2000)); // past the first two delays
    assert.equal(calls.retries.length, 1); // one wait, no more attempts while offline
    assert.deepEqual(server.log.at(-1), ["PATCH", 0]);
    globalThis.navigator.onLine = true;
    page.dispatchEvent(new Event("online"));
    assert.equal(await done, "upload-1");
    assert.deepEqual(server.log.slice(-2), [["HEAD", null], ["PATCH", 30]]);
  } finally {
    delete globalThis.navigator.onLine;
    delete globalThis.addEventListener;
  }
});

test("cuts that each let some bytes through never use up the retries", async () => {
  server.cuts = [15, 15, 15, 15, 15, 15, 15]; // seven cuts, 10 bytes kept each time
  const { done, calls } = start();
  assert.equal(await done, "upload-1");
  assert.equal(calls.retries.length, 7);
  assert.deepEqual(new Set(calls.retries), new Set([500])); // never past the first delay
  assert.deepEqual(server.uploads.get("upload-1").bytes, content);
});

test("a 409 after a cut (the old request still holds the upload) is retried", async () => {
  server.cuts = [25];
  server.refuse.set("PATCH", [409, "Another request is writing this upload."]);
  // The refusal meets the first PATCH; the cut then the second one.
  const { done, calls } = start();
  assert.equal(await done, "upload-1");
  assert.deepEqual(server.uploads.get("upload-1").bytes, content);
  assert.equal(calls.retries.length, 2);
  assert.deepEqual(server.log.filter(([m]) => m === "PATCH").at(-1), ["PATCH", 20]);
});

test("after a reload, the same file goes on from the server's offset", async () => {
  server.hang = true;
  const first = start(); // the page is reloaded while this PATCH is under way
  await new Promise((resolve) => setTimeout(resolve, 20));
  assert.equal(server.uploads.get("upload-1").offset, 30);
  server.log = [];
  const { done, calls } = start();
  assert.equal(await done, "upload-1");
  assert.deepEqual(server.log, [["HEAD", null], ["PATCH", 30]]);
  assert.deepEqual(calls.resumed, [[30, 95]]);
  assert.deepEqual(server.uploads.get("upload-1").bytes, content);
  assert.equal(server.uploads.size, 1);
  first.cancel(); // (the reloaded page's request is gone; this only ends the test's promise)
  await assert.rejects(first.done, { name: "AbortError" });
});

test("the same file picked by another account starts its own upload", async () => {
  server.hang = true;
  start();
  await new Promise((resolve) => setTimeout(resolve, 20));
  const bob = start({ user: "bob" });
  assert.equal(await bob.done, "upload-2");
  assert.deepEqual(bob.calls.resumed, []);
});

test("a remembered upload the server no longer has (expired) starts afresh", async () => {
  server.hang = true;
  start();
  await new Promise((resolve) => setTimeout(resolve, 20));
  server.uploads.clear(); // swept
  server.log = [];
  const { done } = start();
  assert.equal(await done, "upload-2");
  assert.deepEqual(server.log, [["HEAD", null], ["POST", null], ["PATCH", 0]]);
});

test("cancel removes the upload from the server and forgets it", async () => {
  server.hang = true;
  const { done, cancel } = start();
  await new Promise((resolve) => setTimeout(resolve, 20));
  cancel();
  await assert.rejects(done, { name: "AbortError" });
  assert.equal(server.uploads.size, 0);
  assert.deepEqual(server.log.at(-1), ["DELETE", null]);
  assert.equal(localStorage.length, 0);
});

test("refusals reach the page as ApiErrors a person can read", async () => {
  server.refuse.set("POST", [413, "The file is larger than the limit of 10 bytes."]);
  await assert.rejects(start().done, (err) => {
    assert.ok(err instanceof ApiError);
    assert.equal(err.status, 413);
    assert.equal(err.message, "The file is larger than the limit of 10 bytes.");
    return true;
  });
  assert.equal(server.uploads.size, 0);
});

test("an upload gone from the server (expired mid-way) says so, and is forgotten", async () => {
  server.refuse.set("PATCH", [404, "No such upload."]);
  await assert.rejects(start().done, (err) => {
    assert.equal(err.status, 404);
    assert.match(err.message, /^The upload is no longer on the server/);
    return true;
  });
  assert.equal(localStorage.length, 0);
});

test("a 401 mid-upload keeps the upload, to go on after logging in again", async () => {
  server.refuse.set("PATCH", [401, "Token is invalid."]);
  await assert.rejects(start().done, { status: 401 });
  assert.equal(server.uploads.size, 1);
  assert.equal(localStorage.length, 1);
});

test("a checksum mismatch is not retried, and the upload is removed", async () => {
  server.refuse.set("PATCH", [460, ""]);
  await assert.rejects(start().done, (err) => {
    assert.equal(err.status, 460);
    assert.equal(err.message, "The upload was damaged on the way (checksum mismatch).");
    return true;
  });
  assert.equal(server.uploads.size, 0);
  assert.equal(localStorage.length, 0);
});
