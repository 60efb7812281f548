// This browser's age identity, for file keys the server seals to the account's age recipients.
//
// An X25519 key pair made by WebCrypto with a NON-extractable private key: no script, ours included,
// can read its bytes; it can only be used to unseal. IndexedDB stores CryptoKey objects as they are
// (structured clone), so the key survives reloads without ever being exported; one per account name.
// The age format itself (header, X25519 stanza, ChaCha20-Poly1305 payload) is the vendored
// age-encryption package's (age.js), never ours.

import { Decrypter, armor, identityToRecipient } from "./age.js";
import { KEY_SIZE } from "./decrypt.js";

const DATABASE = "cryptofiles";
const STORE = "identities";

export class SealedKeyError extends Error {
  constructor(message) {
    super(message);
    this.name = "SealedKeyError";
  }
}

export async function newIdentity() {
  const pair = await crypto.subtle.generateKey({ name: "X25519" }, false, ["deriveBits"]);
  return { privateKey: pair.privateKey, recipient: await identityToRecipient(pair.privateKey) };
}

// The file key inside a sealed answer (the ASCII-armored age file, or its bytes).
export async function unseal(sealed, privateKey) {
  const decrypter = new Decrypter();
  decrypter.addIdentity(privateKey);
  let key;
  try {
    key = await decrypter.decrypt(typeof sealed === "string" ? armor.decode(sealed) : sealed);
  } catch {
    throw new SealedKeyError(
      "This key is sealed to recipients whose identity this browser does not hold.",
    );
  }
  if (key.length !== KEY_SIZE) throw new SealedKeyError("The sealed answer holds no file key.");
  return key;
}

// -- kept in IndexedDB, per account name -----------------------------------------------------------

function database() {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(DATABASE, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(STORE);
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

async function inStore(mode, act) {
  const db = await database();
  try {
    return await new Promise((resolve, reject) => {
      const transaction = db.transaction(STORE, mode);
      const request = act(transaction.objectStore(STORE));
      transaction.oncomplete = () => resolve(request.result);
      transaction.onerror = () => reject(transaction.error);
    });
  } finally {
    db.close();
  }
}

export const loadIdentity = (name) => inStore("readonly", (store) => store.get(name));
export const saveIdentity = (name, identity) =>
  inStore("readwrite", (store) => store.put(identity, name));
export const forgetIdentity = (name) => inStore("readwrite", (store) => store.delete(name));
