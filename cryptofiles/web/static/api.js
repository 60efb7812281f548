// The API as the page and its service worker use it: every call in one place, and every failure
// turned into an ApiError whose message a person can read. No DOM here: sw.js imports it too.

// The API lives one level above the page (/app/ -> /), so a path prefix in front of both works.
const ROOT = new URL("../", import.meta.url);
const JSON_TYPE = "application/json";

export class ApiError extends Error {
  constructor(status, message, retryAfter = null) {
    super(message);
    this.name = "ApiError";
    this.status = status; // 0 when the server could not be reached
    this.retryAfter = retryAfter; // seconds, from Retry-After, when the server sent one
  }
}

export function apiUrl(path) {
  return new URL(path, ROOT).href;
}

const FALLBACK_MESSAGES = {
  400: "The request was refused.",
  401: "Your session has ended: please log in again.",
  403: "This is not allowed.",
  404: "No such file in your account.",
  408: "The connection was too slow and timed out.",
  409: "The upload is out of step with the server.",
  413: "The file is too large, or your storage quota is used up.",
  429: "Too many attempts.",
  460: "The upload was damaged on the way (checksum mismatch).",
  503: "The server is busy.",
};

// The message for an answer: the API's own explanation (RFC 9457 "detail") when it gave one, with
// how long to wait when it said so.
export function describe(status, detail, retryAfter) {
  // For these the API's wording speaks to curl users ("retry after Retry-After seconds").
  const ours = status === 404 || status === 429 || status === 503;
  let message = (!ours && detail) || FALLBACK_MESSAGES[status] || `The server answered ${status}.`;
  if (retryAfter !== null) message += ` Try again in ${retryAfter} s.`;
  return message;
}

function retryAfterOf(headers) {
  const value = Number.parseInt(headers.get("Retry-After") ?? "", 10);
  return Number.isFinite(value) && value >= 0 ? value : null;
}

export async function errorOf(response) {
  let detail = "";
  try {
    const body = await response.json();
    if (typeof body.detail === "string") detail = body.detail;
  } catch {
    // Not JSON (a proxy's error page, say): the status alone must do.
  }
  const retryAfter = retryAfterOf(response.headers);
  return new ApiError(response.status, describe(response.status, detail, retryAfter), retryAfter);
}

export const UNREACHABLE = "The server cannot be reached: check the connection and try again.";

// fetch() with the token, asking for JSON answers; rejects with ApiError unless the status is 2xx.
export async function call(path, { method = "GET", token, json, signal, headers = {} } = {}) {
  const init = { method, signal, cache: "no-store", headers: { Accept: JSON_TYPE, ...headers } };
  if (token) init.headers["x-access-tokens"] = token;
  if (json !== undefined) {
    init.headers["Content-Type"] = JSON_TYPE;
    init.body = JSON.stringify(json);
  }
  let response;
  try {
    response = await fetch(apiUrl(path), init);
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, UNREACHABLE);
  }
  if (!response.ok) throw await errorOf(response);
  return response;
}

async function callJson(path, options) {
  const response = await call(path, options);
  return response.status === 204 ? null : response.json();
}

export const api = {
  register: (name, password) =>
    callJson("registration", {
      method: "POST",
      json: { New_User_Name: name, New_User_Password: password },
    }),
  login: (name, password) =>
    callJson("login", { method: "POST", json: { User_Name: name, User_Password: password } }),
  whoami: (token) => callJson("test_login", { token }),
  logout: (token) => callJson("logout", { method: "POST", token }),
  list: (token, cursor = null, limit = 20) => {
    const query = new URLSearchParams({ limit: String(limit) });
    if (cursor) query.set("cursor", cursor);
    return callJson(`files?${query}`, { token });
  },
  info: (token, id) => callJson(`files/${encodeURIComponent(id)}/info`, { token }),
  // The plain key ({key}) or, for an account with age recipients, the sealed one ({sealed}).
  key: (token, id) => callJson(`files/${encodeURIComponent(id)}/key`, { token }),
  account: (token) => callJson("account", { token }),
  setRecipients: (token, recipients) =>
    callJson("account/recipients", { method: "PUT", token, json: { recipients } }),
  remove: (token, id) => callJson(`files/${encodeURIComponent(id)}`, { method: "DELETE", token }),
  sharedWithMe: (token, cursor = null) => {
    const query = new URLSearchParams({ shared: "with-me", limit: "20" });
    if (cursor) query.set("cursor", cursor);
    return callJson(`files?${query}`, { token });
  },
  grants: (token, id) => callJson(`files/${encodeURIComponent(id)}/grants`, { token }),
  grant: (token, id, user, expiresAt) =>
    callJson(`files/${encodeURIComponent(id)}/grants`, {
      method: "POST", token, json: { user, expires_at: expiresAt },
    }),
  revokeGrant: (token, id, user) =>
    callJson(`files/${encodeURIComponent(id)}/grants/${encodeURIComponent(user)}`, {
      method: "DELETE", token,
    }),
  links: (token, id) => callJson(`files/${encodeURIComponent(id)}/links`, { token }),
  createLink: (token, id, settings) =>
    callJson(`files/${encodeURIComponent(id)}/links`, { method: "POST", token, json: settings }),
  revokeLink: (token, id, linkId) =>
    callJson(`files/${encodeURIComponent(id)}/links/${encodeURIComponent(linkId)}`, {
      method: "DELETE", token,
    }),
  events: (token, id) => callJson(`files/${encodeURIComponent(id)}/events?limit=50`, { token }),
  // The ciphertext as a streaming Response: the caller reads its body.
  ciphertext: (token, id, signal) => call(`files/${encodeURIComponent(id)}`, { token, signal }),
};

// The ApiError for an XMLHttpRequest's answer (uploads use XHR: fetch() has no upload progress).
export function xhrError(xhr) {
  if (xhr.status === 0) return new ApiError(0, UNREACHABLE);
  const body = xhr.response && typeof xhr.response.detail === "string" ? xhr.response.detail : "";
  const retryAfter = retryAfterOf({ get: (name) => xhr.getResponseHeader(name) });
  return new ApiError(xhr.status, describe(xhr.status, body, retryAfter), retryAfter);
}
