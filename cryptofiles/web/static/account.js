// The account's sealed-key settings as the page shows them: its age recipients on the server, and
// whether this browser holds an identity among them (identity.js).

import { api } from "./api.js";
import { forgetIdentity, loadIdentity, newIdentity, saveIdentity } from "./identity.js";

// { text, canCreate, canRegister, canForget } for the account `name`.
export async function sealingState(token, name) {
  const [account, identity] = await Promise.all([api.account(token), loadIdentity(name)]);
  const registered = Boolean(identity) && account.recipients.includes(identity.recipient);
  let text;
  if (registered) {
    text = `File keys come sealed to this browser's own key (${identity.recipient}), which no ` +
      "script can read; this browser unseals them.";
  } else if (identity) {
    text = "This browser holds a key that your account no longer lists: keys are not sealed to it.";
  } else if (account.recipients.length) {
    text = `File keys come sealed to ${account.recipients.length} age recipient(s) whose ` +
      "identity this browser does not hold: create this browser's key to open them here.";
  } else {
    text = "File keys come in plain base64 (over this connection only). Create a key for this " +
      "browser to have them sealed to it instead.";
  }
  if (account.require_sealed) text += " This account refuses plain keys.";
  return { text, canCreate: !identity, canRegister: Boolean(identity) && !registered, canForget: Boolean(identity) };
}

// A new identity for this browser, kept here and registered among the account's recipients.
export async function createIdentity(token, name) {
  const identity = await newIdentity();
  await saveIdentity(name, identity);
  await registerIdentity(token, name);
}

export async function registerIdentity(token, name) {
  const [account, identity] = await Promise.all([api.account(token), loadIdentity(name)]);
  const recipients = [...new Set([...account.recipients, identity.recipient])];
  await api.setRecipients(token, recipients); // require_sealed is left as it is
}

// Off the account first, then out of this browser: never a recipient nobody can open.
export async function removeIdentity(token, name) {
  const [account, identity] = await Promise.all([api.account(token), loadIdentity(name)]);
  const recipients = account.recipients.filter((r) => r !== identity?.recipient);
  if (account.require_sealed && recipients.length === 0) {
    throw new Error("This account refuses plain keys and this is its only recipient: keep it.");
  }
  await api.setRecipients(token, recipients);
  await forgetIdentity(name);
}
