// The page: sign-in, uploads with progress, the file list, keys, and downloads decrypted here.
// Everything goes through the same API as curl (api.js); downloads through downloads.js.

import { createIdentity, registerIdentity, removeIdentity, sealingState } from "./account.js";
import { api, ApiError } from "./api.js";
import { save, startWorker } from "./downloads.js";
import { fileKey } from "./keys.js";
import { closeSharing, openSharing } from "./sharing.js";
import { upload } from "./tus.js";

const $ = (id) => document.getElementById(id);

// The token lives in this tab's sessionStorage: gone when the tab closes, never in a cookie or in
// localStorage, never in a URL. Logging out revokes it on the server too.
const session = {
  get token() {
    return sessionStorage.getItem("cryptofiles.token");
  },
  get name() {
    return sessionStorage.getItem("cryptofiles.name");
  },
  keep(token, name) {
    sessionStorage.setItem("cryptofiles.token", token);
    sessionStorage.setItem("cryptofiles.name", name);
  },
  clear() {
    sessionStorage.removeItem("cryptofiles.token");
    sessionStorage.removeItem("cryptofiles.name");
  },
};

// -- messages -------------------------------------------------------------------------------------

function notify(text) {
  $("alert").hidden = true;
  $("notice").textContent = text;
}

function warn(text) {
  $("notice").textContent = "";
  $("alert").textContent = text;
  $("alert").hidden = false;
}

function messageOf(err) {
  const ours = ["DecryptionError", "SealedKeyError", "KeyFormatError"];
  if (err instanceof ApiError || ours.includes(err?.name)) return err.message;
  if (err instanceof TypeError) return "The connection was cut; nothing was saved. Try again.";
  return err?.message || String(err);
}

// Every failure ends here. An answer 401 means the token expired or was revoked: back to sign-in.
function fail(err) {
  if (err?.name === "AbortError") return;
  if (err instanceof ApiError && err.status === 401 && session.token) {
    signOut("Your session has ended: please log in again.");
    return;
  }
  warn(messageOf(err));
}

// -- formatting -----------------------------------------------------------------------------------

const UNITS = ["bytes", "KiB", "MiB", "GiB", "TiB"];

function formatSize(bytes) {
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${bytes} bytes` : `${value.toFixed(1)} ${UNITS[unit]}`;
}

// `since`: the bytes already there when this run started (a resumed upload's offset).
function formatProgress(done, total, startedAt, since = 0) {
  const seconds = (performance.now() - startedAt) / 1000;
  const speed = seconds > 0 ? `${formatSize((done - since) / seconds)}/s` : "";
  return `${formatSize(done)} of ${formatSize(total)}${speed ? ` · ${speed}` : ""}`;
}

// -- screens --------------------------------------------------------------------------------------

function showSignin() {
  $("workspace").hidden = true;
  $("session").hidden = true;
  $("signin").hidden = false;
  $("login-name").focus();
}

function showWorkspace() {
  $("signin").hidden = true;
  $("user-name").textContent = session.name;
  $("session").hidden = false;
  $("workspace").hidden = false;
  loadFiles().catch(fail);
  loadShared().catch(fail);
  showSealing().catch(fail);
}

// Leaving the session: nothing of it stays on screen, and no upload goes on in its name (Log out
// first removes the running one from the server, while the token still works).
function leave() {
  stopUploads();
  session.clear();
  clearFiles();
  $("shared").tBodies[0].replaceChildren();
  closeSharing();
  hideKey();
  showSignin();
}

function signOut(message) {
  leave();
  warn(message);
}

// -- accounts -------------------------------------------------------------------------------------

async function withButton(form, action) {
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    await action();
  } catch (err) {
    fail(err);
  } finally {
    button.disabled = false;
  }
}

function credentials(form) {
  const name = form.elements.name.value.trim();
  const password = form.elements.password.value;
  if (!name || !password) throw new ApiError(400, "Enter a name and a password.");
  return [name, password];
}

async function logIn(name, password) {
  const { token } = await api.login(name, password);
  const who = await api.whoami(token);
  session.keep(token, who.name);
  $("login-form").reset();
  $("register-form").reset();
  notify(`Logged in as ${who.name}.`);
  showWorkspace();
}

$("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  withButton(event.target, () => logIn(...credentials(event.target)));
});

$("register-form").addEventListener("submit", (event) => {
  event.preventDefault();
  withButton(event.target, async () => {
    const [name, password] = credentials(event.target);
    await api.register(name, password);
    await logIn(name, password);
  });
});

$("logout").addEventListener("click", async () => {
  await stopUploads();
  try {
    await api.logout(session.token);
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 401)) {
      fail(err); // the token is still valid: stay logged in rather than pretend otherwise
      return;
    }
  }
  leave();
  notify("Logged out. The token is revoked.");
});

// -- uploads --------------------------------------------------------------------------------------

const uploadQueue = [];
let uploading = false;
let current = null; // the job being uploaded

// Resolves once the running upload is removed from the server (or could not be).
function stopUploads() {
  for (const job of uploadQueue.splice(0)) {
    job.cancelled = true;
    job.view.end("Cancelled: nothing was stored.", "cancelled");
  }
  if (!current?.cancel) return Promise.resolve();
  current.cancel();
  return current.settled;
}

function transferItem(list, name) {
  const item = $("transfer-template").content.firstElementChild.cloneNode(true);
  item.querySelector(".name").textContent = name;
  item.querySelector(".cancel").setAttribute("aria-label", `Cancel ${name}`);
  list.prepend(item);
  return {
    item,
    progress: item.querySelector("progress"),
    detail: item.querySelector(".detail"),
    cancel: item.querySelector(".cancel"),
    end(text, state) {
      this.detail.textContent = text;
      this.cancel.hidden = true;
      item.dataset.state = state;
    },
  };
}

function enqueueUploads(files) {
  for (const file of files) {
    const view = transferItem($("uploads"), file.name);
    view.detail.textContent = `Waiting · ${formatSize(file.size)}`;
    const job = { file, view, cancelled: false, cancel: null, settled: null };
    view.cancel.addEventListener("click", () => {
      job.cancelled = true;
      if (job.cancel) job.cancel();
      else view.end("Cancelled: nothing was stored.", "cancelled");
    });
    uploadQueue.push(job);
  }
  if (!uploading) runUploads();
}

// One upload at a time: they share one connection's bandwidth anyway, and each gets its own
// progress and a cancel that stores nothing.
async function runUploads() {
  uploading = true;
  while (uploadQueue.length) {
    current = uploadQueue.shift();
    if (current.cancelled) continue;
    await uploadOne(current);
  }
  current = null;
  uploading = false;
}

const percent = (part, whole) => Math.floor((100 * part) / whole);

// The stored file as the list shows it: the server's description, or, if the connection is gone
// right after the last bytes (the file is stored all the same), what the page knows of it.
async function described(id, file) {
  try {
    return await api.info(session.token, id);
  } catch (err) {
    if (!(err instanceof ApiError) || err.status !== 0) throw err;
    return { id, name: file.name, size: file.size, created_at: new Date().toISOString() };
  }
}

// A cut connection is retried here; if the upload still fails, or the page is reloaded, picking the
// same file again goes on from what the server kept (tus.js remembers the upload).
async function uploadOne(job) {
  const { file, view } = job;
  let startedAt = performance.now();
  let since = 0;
  let resumed = "";
  view.item.dataset.state = "running";
  const running = upload({
    token: session.token,
    user: session.name,
    file,
    onProgress: (sent, total) => {
      view.progress.value = sent / total;
      view.detail.textContent = formatProgress(sent, total, startedAt, since) + resumed;
    },
    onResume: (offset, total) => {
      [startedAt, since] = [performance.now(), offset];
      resumed = ` · resumed at ${percent(offset, total)} %`;
      view.progress.value = offset / total;
      view.detail.textContent = `Resuming at ${percent(offset, total)} %`;
    },
    onRetry: (delay) => {
      view.detail.textContent = `Connection lost: trying again in ${Math.ceil(delay / 1000)} s…`;
    },
  });
  job.cancel = running.cancel;
  job.settled = running.done.catch(() => {});
  try {
    const stored = await described(await running.done, file);
    view.progress.value = 1;
    view.end(`Stored as ${stored.id}`, "done");
    view.item.dataset.fileId = stored.id;
    addFileRow(stored, { first: true });
  } catch (err) {
    if (err?.name === "AbortError") {
      view.end("Cancelled: nothing was stored.", "cancelled");
    } else {
      const cut = err instanceof ApiError && err.status === 0;
      view.end(messageOf(err) + (cut ? " Pick the file again to resume." : ""), "failed");
      fail(err);
    }
  }
}

$("file-input").addEventListener("change", (event) => {
  enqueueUploads([...event.target.files]);
  event.target.value = "";
});

const dropZone = $("drop-zone");
dropZone.addEventListener("dragover", (event) => {
  event.preventDefault();
  dropZone.classList.add("dragging");
});
dropZone.addEventListener("dragleave", () => dropZone.classList.remove("dragging"));
dropZone.addEventListener("drop", (event) => {
  event.preventDefault();
  dropZone.classList.remove("dragging");
  enqueueUploads([...event.dataTransfer.files]);
});

// -- the file list --------------------------------------------------------------------------------

let nextCursor = null;
const shown = new Map(); // file id -> its row

function clearFiles() {
  $("files").tBodies[0].replaceChildren();
  shown.clear();
  nextCursor = null;
  $("more").hidden = true;
}

async function loadFiles(cursor = null) {
  if (!cursor) clearFiles();
  const page = await api.list(session.token, cursor);
  for (const file of page.files) addFileRow(file);
  nextCursor = page.next_cursor;
  $("more").hidden = !nextCursor;
  $("files-empty").hidden = shown.size > 0;
}

// A table row from `template` for `file`: its name, size and action buttons (named for the file).
function fileRow(template, file) {
  const row = $(template).content.firstElementChild.cloneNode(true);
  const name = file.name || file.id;
  row.dataset.fileId = file.id;
  row.querySelector(".name").textContent = name;
  row.querySelector(".name").title = file.id;
  row.querySelector(".size").textContent = formatSize(file.size);
  for (const button of row.querySelectorAll("button[data-action]")) {
    button.setAttribute("aria-label", `${button.textContent} ${name}`);
    button.addEventListener("click", () => act(button.dataset.action, file, row));
  }
  return row;
}

function addFileRow(file, { first = false } = {}) {
  if (shown.has(file.id)) return shown.get(file.id);
  const row = fileRow("file-row-template", file);
  row.querySelector(".date").textContent = new Date(file.created_at).toLocaleString();
  const body = $("files").tBodies[0];
  if (first) body.prepend(row);
  else body.append(row);
  shown.set(file.id, row);
  $("files-empty").hidden = true;
  return row;
}

function act(action, file, row) {
  const actions = {
    decrypt: () => startDownload(file, true),
    ciphertext: () => startDownload(file, false),
    key: () => showKey(file),
    share: () => openSharing(file, { session, fail, notify }),
    delete: () => removeFile(file, row),
  };
  Promise.resolve().then(actions[action]).catch(fail);
}

async function removeFile(file, row) {
  const name = file.name || file.id;
  if (!window.confirm(`Delete "${name}" for good? Its key is destroyed with it.`)) return;
  await api.remove(session.token, file.id);
  row.remove();
  shown.delete(file.id);
  $("files-empty").hidden = shown.size > 0;
  notify(`Deleted ${name}.`);
}

$("refresh").addEventListener("click", () => loadFiles().catch(fail));

// Files others granted you: the key comes to you (sealed to your recipients, if any).
async function loadShared() {
  const page = await api.sharedWithMe(session.token);
  const rows = page.files.map((file) => {
    const row = fileRow("shared-row-template", file);
    row.querySelector(".owner").textContent = file.owner_name;
    return row;
  });
  $("shared").tBodies[0].replaceChildren(...rows);
  $("shared-empty").hidden = rows.length > 0;
}

$("shared-refresh").addEventListener("click", () => loadShared().catch(fail));
$("more").addEventListener("click", () => loadFiles(nextCursor).catch(fail));

$("open-form").addEventListener("submit", (event) => {
  event.preventDefault();
  withButton(event.target, async () => {
    const id = event.target.elements.id.value.trim();
    if (!id) throw new ApiError(400, "Enter a file id.");
    const file = await api.info(session.token, id); // the owner's only: anyone else gets 404
    const row = addFileRow(file, { first: true });
    row.querySelector("button[data-action=decrypt]").focus();
    notify(`Opened ${file.name || file.id}.`);
  });
});

// -- keys -----------------------------------------------------------------------------------------

async function showKey(file) {
  // Unsealed here when the account has age recipients and this browser holds one's identity.
  const bytes = await fileKey(session.token, file.id, session.name);
  const key = btoa(String.fromCharCode(...bytes));
  $("key-file").textContent = file.name || file.id;
  $("key-value").value = key;
  $("key-panel").hidden = false;
  $("key-value").focus();
  $("key-value").select();
}

function hideKey() {
  $("key-value").value = "";
  $("key-panel").hidden = true;
}

$("key-copy").addEventListener("click", async () => {
  try {
    await navigator.clipboard.writeText($("key-value").value);
    notify("Key copied to the clipboard.");
  } catch {
    $("key-value").select();
    notify("Copying was refused by the browser: the key is selected, copy it with Ctrl+C.");
  }
});
$("key-hide").addEventListener("click", hideKey);

// -- sealed keys ----------------------------------------------------------------------------------

async function showSealing() {
  const state = await sealingState(session.token, session.name);
  $("sealing-state").textContent = state.text;
  $("identity-create").hidden = !state.canCreate;
  $("identity-register").hidden = !state.canRegister;
  $("identity-remove").hidden = !state.canForget;
}

function sealingAction(id, action, done) {
  $(id).addEventListener("click", async () => {
    $(id).disabled = true;
    try {
      await action(session.token, session.name);
      notify(done);
      await showSealing();
    } catch (err) {
      fail(err);
    } finally {
      $(id).disabled = false;
    }
  });
}

sealingAction("identity-create", createIdentity, "This browser's key is made and registered.");
sealingAction("identity-register", registerIdentity, "This browser's key is registered again.");
sealingAction("identity-remove", removeIdentity, "This browser's key is removed.");

// -- downloads ------------------------------------------------------------------------------------

function startDownload(file, decrypt) {
  const name = file.name || file.id;
  const view = transferItem($("downloads"), decrypt ? name : `${name}.enc`);
  const startedAt = performance.now();
  view.item.dataset.state = "running";
  view.detail.textContent = "Starting…";
  const running = save({
    token: session.token,
    account: session.name,
    file,
    decrypt,
    onProgress: (received, total) => {
      view.progress.value = total ? received / total : 1;
      view.detail.textContent = formatProgress(received, total, startedAt);
    },
  });
  view.cancel.addEventListener("click", running.cancel);
  running.done.then(
    () => {
      view.progress.value = 1;
      view.end(decrypt ? "Decrypted in this browser and saved." : "Ciphertext saved.", "done");
    },
    (err) => {
      if (err?.name === "AbortError") {
        view.end("Cancelled: nothing was saved.", "cancelled");
        return;
      }
      view.end(messageOf(err), "failed");
      fail(err);
    },
  );
}

// -- start ----------------------------------------------------------------------------------------

async function start() {
  startWorker();
  if (!globalThis.crypto?.subtle) {
    warn("This page decrypts with WebCrypto, which browsers offer only over HTTPS or on localhost. " +
      "Uploads and ciphertext downloads work; decrypt with the command-line client.");
  }
  if (!session.token) {
    showSignin();
    return;
  }
  try {
    await api.whoami(session.token);
    showWorkspace();
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) signOut("Your session has ended: please log in again.");
    else {
      showSignin();
      fail(err);
    }
  }
}

start();
