// The page's API client (cryptofiles/web/static/api.js): how refusals read to a person.
// Run by tests/test_page_scripts.py with Node's test runner; no server needed: these are the
// messages built from answers, the answers themselves are the browser tests' business.

import assert from "node:assert/strict";
import { test } from "node:test";

import { ApiError, UNREACHABLE, api, describe, errorOf } from "../../cryptofiles/web/static/api.js";

function problem(status, detail, headers = {}) {
  const body = JSON.stringify({ type: "about:blank", title: "x", status, detail });
  return new Response(body, {
    status,
    headers: { "Content-Type": "application/problem+json", ...headers },
  });
}

test("the API's own explanation is shown for refusals a person can act on", () => {
  assert.equal(describe(400, "Password must be at least 8 characters.", null),
    "Password must be at least 8 characters.");
  assert.equal(describe(413, "The file is larger than the limit of 10 bytes.", null),
    "The file is larger than the limit of 10 bytes.");
  assert.equal(describe(401, "Wrong name or password.", null), "Wrong name or password.");
});

test("404, 429 and 503 speak the page's words, with the wait when the server gave one", () => {
  assert.equal(describe(404, "File not found.", null), "No such file in your account.");
  assert.equal(describe(429, "retry after Retry-After seconds.", 42),
    "Too many attempts. Try again in 42 s.");
  assert.equal(describe(503, "Service unavailable: database", 1),
    "The server is busy. Try again in 1 s.");
  assert.equal(describe(503, "", null), "The server is busy.");
});

test("an unknown status still reads as a sentence", () => {
  assert.equal(describe(418, "", null), "The server answered 418.");
});

test("errorOf reads detail and Retry-After from a real answer", async () => {
  const err = await errorOf(problem(429, "Too many requests (limit: 1 per minute).",
    { "Retry-After": "17" }));
  assert.ok(err instanceof ApiError);
  assert.equal(err.status, 429);
  assert.equal(err.retryAfter, 17);
  assert.equal(err.message, "Too many attempts. Try again in 17 s.");
});

test("errorOf copes with an answer that is not JSON (a proxy's error page)", async () => {
  const err = await errorOf(new Response("<html>Bad gateway</html>", { status: 502 }));
  assert.equal(err.status, 502);
  assert.equal(err.message, "The server answered 502.");
  assert.equal(err.retryAfter, null);
});

test("a server out of reach is status 0 with a sentence, not a TypeError", async () => {
  const real = globalThis.fetch;
  globalThis.fetch = async () => {
    throw new TypeError("fetch failed");
  };
  try {
    await assert.rejects(api.whoami("token"), (err) => {
      assert.ok(err instanceof ApiError);
      assert.equal(err.status, 0);
      assert.equal(err.message, UNREACHABLE);
      return true;
    });
  } finally {
    globalThis.fetch = real;
  }
});
