// The page of a share link (/s/<token>): downloads the file's ciphertext through the link,
// decrypts it in this browser with the key from the address's fragment (#k=<base64url key>) and
// saves the plaintext. Browsers never send the fragment, so the server never sees the key.
//
// The plaintext is assembled in memory (up to BLOB_LIMIT, as the main page does without a service
// worker): the service worker's streaming save works only for pages under /app/. Larger files:
// the encrypted download, then the command-line client. Each download through the link counts
// against its limit, so nothing starts without a click.

import { apiUrl, errorOf, UNREACHABLE } from "./api.js";
import { decodeKey, decryptStream, importKey } from "./decrypt.js";
import { BLOB_LIMIT } from "./downloads.js";

const DEAD_LINK = "This link has expired, was revoked or has been used up.";

const info = JSON.parse(document.getElementById("link-data").textContent);
const token = decodeURIComponent(location.pathname.split("/").pop());
const fileUrl = apiUrl(`s/${encodeURIComponent(token)}/file`);
const keyText = new URLSearchParams(location.hash.slice(1)).get("k");

const $ = (id) => document.getElementById(id);
const decryptButton = $("link-decrypt");

function formatSize(bytes) {
  const units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${bytes} bytes` : `${value.toFixed(1)} ${units[unit]}`;
}

function showError(message) {
  $("link-status").textContent = "";
  $("link-alert").textContent = message;
  $("link-alert").hidden = false;
}

function saveBlob(parts, name) {
  const url = URL.createObjectURL(new Blob(parts, { type: "application/octet-stream" }));
  const anchor = document.createElement("a");
  anchor.href = url;
  anchor.download = name;
  anchor.hidden = true;
  document.body.append(anchor);
  anchor.click();
  anchor.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

async function fetchCiphertext() {
  let response;
  try {
    response = await fetch(fileUrl, { cache: "no-store", credentials: "omit" });
  } catch {
    throw new Error(UNREACHABLE);
  }
  if (response.status === 404) throw new Error(DEAD_LINK);
  if (!response.ok) throw await errorOf(response);
  return response;
}

async function decryptAndSave() {
  decryptButton.disabled = true;
  $("link-alert").hidden = true;
  try {
    const key = await importKey(decodeKey(keyText));
    $("link-status").textContent = "Downloading and decrypting…";
    const response = await fetchCiphertext();
    const reader = response.body.pipeThrough(decryptStream(key)).getReader();
    const parts = [];
    let done = 0;
    for (;;) {
      const next = await reader.read(); // rejects on any failure: nothing is saved then
      if (next.done) break;
      parts.push(next.value);
      done += next.value.byteLength;
      $("link-status").textContent = `Decrypted ${formatSize(done)} of ${formatSize(info.size)}…`;
    }
    saveBlob(parts, info.name);
    $("link-status").textContent = `Saved ${info.name} (${formatSize(done)}), decrypted here.`;
  } catch (error) {
    showError(error.message);
  } finally {
    decryptButton.disabled = false;
  }
}

// The key is read once, at load: a fragment edited in the address bar loads the page again.
window.addEventListener("hashchange", () => location.reload());

$("link-name").textContent = info.name;
$("link-size").textContent = `(${formatSize(info.size)})`;
const cipherLink = $("link-ciphertext");
cipherLink.href = fileUrl;
cipherLink.download = `${info.name}.enc`;

if (!keyText) {
  $("link-note").textContent =
    "The key is missing from this link (the part after #k=). You can download the encrypted " +
    "file, and decrypt it later with its key: cryptofiles decrypt FILE --key-file KEYFILE.";
} else if (info.size > BLOB_LIMIT) {
  $("link-note").textContent =
    "This file is too large to decrypt in the browser (over 256 MiB). Use the command-line " +
    "client with the whole link: cryptofiles download 'LINK'.";
} else {
  $("link-note").textContent =
    "The key is in this link and never left your browser: the file is decrypted here. " +
    "Each download counts against the link's limit.";
  decryptButton.hidden = false;
  decryptButton.addEventListener("click", decryptAndSave);
}
