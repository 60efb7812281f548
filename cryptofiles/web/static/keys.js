// A file's key as the page and its service worker need it: from the API, and unsealed here with
// this browser's age identity when the server sealed it to the account's recipients.

import { api } from "./api.js";
import { decodeKey } from "./decrypt.js";
import { SealedKeyError, loadIdentity, unseal } from "./identity.js";

const NO_IDENTITY =
  "This file's key is sealed to your age recipients, and this browser holds none of their " +
  "identities: create this browser's key (Sealed keys, below), or use the command-line client " +
  "with your identity file.";

// The 32 key bytes; `account` names whose identity to look for (one per account name).
export async function fileKey(token, id, account) {
  const answer = await api.key(token, id);
  if (typeof answer.key === "string") return decodeKey(answer.key);
  const identity = await loadIdentity(account);
  if (!identity) throw new SealedKeyError(NO_IDENTITY);
  return unseal(answer.sealed, identity.privateKey);
}
