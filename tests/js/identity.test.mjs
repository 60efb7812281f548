// The page's sealed-key support (cryptofiles/web/static/identity.js, with the vendored age.js),
// against the stock `age` CLI (path in CRYPTOFILES_AGE): what the CLI seals to a browser identity
// whose private key is non-extractable, the page unseals; nothing else unseals it.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { test } from "node:test";

import { SealedKeyError, newIdentity, unseal } from "../../cryptofiles/web/static/identity.js";

const AGE = process.env.CRYPTOFILES_AGE;
if (!AGE) throw new Error("CRYPTOFILES_AGE must name the stock age binary");

function sealWithAge(recipient, bytes, armored) {
  const args = ["-r", recipient, ...(armored ? ["-a"] : [])];
  return new Uint8Array(execFileSync(AGE, args, { input: Buffer.from(bytes) }));
}

test("a new identity's private key cannot be exported", async () => {
  const identity = await newIdentity();
  assert.equal(identity.privateKey.extractable, false);
  assert.match(identity.recipient, /^age1[02-9ac-hj-np-z]{58}$/);
  await assert.rejects(crypto.subtle.exportKey("pkcs8", identity.privateKey));
});

test("what the stock age CLI seals to the browser's recipient, the browser unseals", async () => {
  const identity = await newIdentity();
  const key = crypto.getRandomValues(new Uint8Array(32));
  const armored = new TextDecoder().decode(sealWithAge(identity.recipient, key, true));
  assert.match(armored, /^-----BEGIN AGE ENCRYPTED FILE-----/);
  assert.deepEqual(await unseal(armored, identity.privateKey), key);
  assert.deepEqual(await unseal(sealWithAge(identity.recipient, key, false), identity.privateKey), key);
});

test("another identity, garbage or a non-key payload are refused", async () => {
  const [mine, theirs] = [await newIdentity(), await newIdentity()];
  const key = crypto.getRandomValues(new Uint8Array(32));
  const sealed = sealWithAge(theirs.recipient, key, false);
  await assert.rejects(unseal(sealed, mine.privateKey), SealedKeyError);
  await assert.rejects(unseal("not an age file", mine.privateKey), SealedKeyError);
  const notAKey = sealWithAge(mine.recipient, new Uint8Array(31), false);
  await assert.rejects(unseal(notAKey, mine.privateKey), /holds no file key/);
});
