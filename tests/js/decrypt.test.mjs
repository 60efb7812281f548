// Tests of the page's decryptor against vectors Tink wrote. tests/test_page_decryptor.py writes
// them (with a manifest.json) into a folder and runs this file with CRYPTOFILES_VECTORS naming it:
//   node --test tests/js/decrypt.test.mjs
// Organised by failure class: good files in every size class and delivery, then each way a file
// can be wrong, then the helpers (keys, sizes).

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";

import {
  DecryptionError,
  HEADER_SIZE,
  KeyFormatError,
  SEGMENT_SIZE,
  TAG_SIZE,
  decodeKey,
  decryptBytes,
  decryptStream,
  importKey,
  plaintextSize,
} from "../../cryptofiles/web/static/decrypt.js";

const folder = process.env.CRYPTOFILES_VECTORS;
if (!folder) {
  throw new Error(
    "CRYPTOFILES_VECTORS is not set: run `pytest tests/test_page_decryptor.py`, which writes " +
      "Tink's vectors into a folder and runs these tests on them",
  );
}
const manifest = JSON.parse(readFileSync(join(folder, "manifest.json"), "utf8"));
const cases = new Map(
  manifest.cases.map((c) => [
    c.name,
    { ...c, key: decodeKey(c.key), ciphertext: new Uint8Array(readFileSync(join(folder, c.file))) },
  ]),
);
const vector = (name) => {
  const found = cases.get(name);
  assert.ok(found, `no vector named ${name} in the manifest`);
  return found;
};

const KiB = 1024;

// A pull-driven source, so the transform's backpressure decides how far ahead it is read.
function source(bytes, chunkSize, onPull = () => {}) {
  let at = 0;
  return new ReadableStream(
    {
      pull(controller) {
        if (at >= bytes.length) {
          controller.close();
          return;
        }
        const chunk = bytes.subarray(at, at + chunkSize);
        at += chunk.length;
        onPull(at);
        controller.enqueue(chunk);
      },
    },
    { highWaterMark: 0 },
  );
}

// SHA-256 and length of the plaintext; rejects unless the stream closes without error.
async function decrypt(key, bytes, chunkSize = bytes.length || 1) {
  const digest = createHash("sha256");
  let length = 0;
  for await (const piece of source(bytes, chunkSize).pipeThrough(decryptStream(key))) {
    assert.ok(piece instanceof Uint8Array);
    digest.update(piece);
    length += piece.length;
  }
  return { sha256: digest.digest("hex"), length };
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, part) => n + part.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}
const flipped = (bytes, at) => {
  const out = bytes.slice();
  out[at] ^= 0x01;
  return out;
};
const hex = (bytes) => Buffer.from(bytes).toString("hex");

// Segment i's ciphertext (segment 0 without the header) in a file.
function segment(bytes, i) {
  const start = i === 0 ? HEADER_SIZE : SEGMENT_SIZE * i;
  return bytes.subarray(start, Math.min(SEGMENT_SIZE * (i + 1), bytes.length));
}

describe("Tink's files decrypt, however the bytes arrive", () => {
  for (const c of cases.values()) {
    // 1-byte chunks only where that stays quick; odd-sized ones cross every boundary elsewhere.
    const tiny = c.ciphertext.length < 4 * KiB ? 1 : 7919;
    const deliveries = [
      ["whole", c.ciphertext.length],
      [`${tiny}-byte chunks`, tiny],
      ["64 KiB chunks", 64 * KiB], // these end exactly on segment boundaries
    ];
    for (const [label, size] of deliveries) {
      test(`${c.name} (${c.size} bytes), ${label}`, async () => {
        const got = await decrypt(c.key, c.ciphertext, size);
        assert.deepEqual(got, { sha256: c.sha256, length: c.size });
      });
    }
    test(`${c.name}: plaintextSize of its ciphertext length`, () => {
      assert.equal(plaintextSize(c.ciphertext.length), c.size);
    });
  }

  test("with a CryptoKey from importKey, and by decryptBytes", async () => {
    const c = vector("second+1");
    const got = await decrypt(await importKey(c.key), c.ciphertext, 64 * KiB);
    assert.equal(got.sha256, c.sha256);
    const plain = await decryptBytes(await importKey(c.key), c.ciphertext);
    assert.equal(createHash("sha256").update(plain).digest("hex"), c.sha256);
    for (const name of ["empty", "one-byte"]) {
      const small = vector(name);
      assert.equal((await decryptBytes(small.key, small.ciphertext)).length, small.size);
    }
  });

  test("13-byte chunks of a two-segment file (quadratic copying would take minutes)", async () => {
    const c = vector("second+1");
    const got = await decrypt(c.key, c.ciphertext, 13);
    assert.equal(got.sha256, c.sha256);
  });

  test("backpressure: the input is read at most about two segments ahead", async () => {
    const c = vector("several");
    let pulled = 0;
    const reader = source(c.ciphertext, 64 * KiB, (at) => (pulled = at))
      .pipeThrough(decryptStream(c.key))
      .getReader();
    const first = await reader.read();
    assert.equal(first.value.length, SEGMENT_SIZE - HEADER_SIZE - TAG_SIZE);
    await new Promise((resolve) => setTimeout(resolve, 100)); // let the pipe run ahead if it would
    assert.ok(pulled <= 2 * SEGMENT_SIZE + 2 * 64 * KiB, `read ${pulled} bytes ahead`);
    while (!(await reader.read()).done);
  });
});

describe("every damaged file is refused with a DecryptionError", () => {
  const several = vector("several"); // four segments, the last one partial
  const full = vector("first"); // one segment of full size, which is the last
  const ct = several.ciphertext;
  const header = ct.subarray(0, HEADER_SIZE);
  const seg = (i) => segment(ct, i);
  const integrity = (i) => new RegExp(`^The file failed its integrity check \\(segment ${i}\\)`);
  const noHeader = /^The file is cut short \(no complete header\)/;
  const wrongKey = crypto.getRandomValues(new Uint8Array(32));
  const one = new Uint8Array(1);
  // [what, bytes, expected message, key if not that of "several"]
  const damaged = [
    ["wrong key", ct, integrity(0), wrongKey],
    ["no bytes at all", ct.subarray(0, 0), noHeader],
    ["cut inside the header", ct.subarray(0, 20), noHeader],
    ["header only", header, /cut short \(segment 0 is incomplete\)/],
    ["bad header length byte", flipped(ct, 0), /^Not a file in this format \(bad header\)\.$/],
    ["flipped byte in the salt", flipped(ct, 5), integrity(0)],
    ["flipped byte in the nonce prefix", flipped(ct, HEADER_SIZE - 1), integrity(0)],
    ["flipped byte in segment 0", flipped(ct, 1000), integrity(0)],
    ["flipped byte in segment 2", flipped(ct, 2 * SEGMENT_SIZE + 5), integrity(2)],
    ["flipped byte in the last tag", flipped(ct, ct.length - 1), integrity(3)],
    ["last segment dropped (cut at a boundary)", ct.subarray(0, 3 * SEGMENT_SIZE), integrity(2)],
    ["cut one byte short", ct.subarray(0, ct.length - 1), integrity(3)],
    ["cut to less than a tag", ct.subarray(0, 3 * SEGMENT_SIZE + 10), /segment 3 is incomplete/],
    ["one byte appended", concat(ct, one), integrity(3)],
    ["one byte after a full last segment", concat(full.ciphertext, one), integrity(0), full.key],
    ["segments 1 and 2 swapped", concat(header, seg(0), seg(2), seg(1), seg(3)), integrity(1)],
    ["segment 1 duplicated", concat(header, seg(0), seg(1), seg(1), seg(2), seg(3)), integrity(2)],
    ["segment 1 dropped", concat(header, seg(0), seg(2), seg(3)), integrity(1)],
  ];
  for (const [what, bytes, message, key = several.key] of damaged) {
    for (const [delivery, size] of [["whole", bytes.length || 1], ["64 KiB chunks", 64 * KiB]]) {
      test(`${what}, ${delivery}`, async () => {
        await assert.rejects(decrypt(key, bytes, size), (error) => {
          assert.ok(error instanceof DecryptionError, `${error?.name}: ${error?.message}`);
          assert.equal(error.name, "DecryptionError");
          assert.match(error.message, message);
          for (const k of [key, several.key]) {
            assert.ok(!error.message.includes(hex(k)), "the message shows the key");
            assert.ok(!error.message.includes(Buffer.from(k).toString("base64")));
          }
          return true;
        });
      });
    }
  }

  test("a bad header is refused on its first byte, before more is read", async () => {
    let pulled = 0;
    const bytes = flipped(several.ciphertext, 0);
    const output = source(bytes, 1, (at) => (pulled = at)).pipeThrough(decryptStream(several.key));
    await assert.rejects(output.getReader().read(), DecryptionError);
    assert.ok(pulled <= 2, `read ${pulled} bytes`);
  });

  test("decryptBytes refuses too", async () => {
    const bytes = flipped(several.ciphertext, 1000);
    await assert.rejects(decryptBytes(several.key, bytes), DecryptionError);
  });
});

describe("keys", () => {
  test("decodeKey reads key texts exactly as cryptofiles/crypto/keytext.py does", () => {
    for (const [text, expected] of manifest.key_texts) {
      if (expected === null) {
        assert.throws(() => decodeKey(text), (error) => {
          assert.ok(error instanceof KeyFormatError, `${JSON.stringify(text)}: ${error}`);
          assert.equal(error.name, "KeyFormatError");
          const word = text.trim();
          assert.ok(word === "" || !error.message.includes(word), "the message echoes the text");
          return true;
        });
      } else {
        assert.equal(hex(decodeKey(text)), expected, JSON.stringify(text));
      }
    }
  });

  test("decodeKey: both alphabets, padding or none, a wrong length named", () => {
    const key = Uint8Array.from({ length: 32 }, (_, i) => 0xf8 + (i % 8)); // '+' and '/' in base64
    const standard = Buffer.from(key).toString("base64");
    const urlSafe = Buffer.from(key).toString("base64url");
    assert.ok(/[+/]/.test(standard) && /[-_]/.test(urlSafe));
    for (const text of [standard, standard.replace(/=+$/, ""), urlSafe]) {
      assert.deepEqual(decodeKey(`\t${text} \n`), key);
    }
    assert.throws(() => decodeKey(Buffer.from(key.subarray(0, 16)).toString("base64")), /got 16\./);
    const noEcho = (error) => error instanceof KeyFormatError && !error.message.includes(standard);
    assert.throws(() => decodeKey(`${standard}!`), noEcho);
    assert.throws(() => decodeKey(null), KeyFormatError);
  });

  test("importKey gives a non-extractable HKDF key", async () => {
    const key = await importKey(vector("one-byte").key);
    assert.equal(key.extractable, false);
    assert.equal(key.type, "secret");
    assert.equal(key.algorithm.name, "HKDF");
    assert.deepEqual(key.usages, ["deriveKey"]);
    await assert.rejects(crypto.subtle.exportKey("raw", key));
  });

  test("a key of the wrong length is refused at once", async () => {
    await assert.rejects(importKey(new Uint8Array(31)), KeyFormatError);
    assert.throws(() => decryptStream(new Uint8Array(33)), KeyFormatError);
  });
});

describe("sizes", () => {
  test("the constants are the format's", () => {
    assert.deepEqual({ SEGMENT_SIZE, HEADER_SIZE, TAG_SIZE }, manifest.constants);
  });

  test("plaintextSize agrees with cryptofiles.crypto.layout on every listed length", () => {
    for (const [ciphertextSize, expected] of manifest.plaintext_sizes) {
      if (expected === null) {
        assert.throws(() => plaintextSize(ciphertextSize), DecryptionError, String(ciphertextSize));
      } else {
        assert.equal(plaintextSize(ciphertextSize), expected, String(ciphertextSize));
      }
    }
    assert.throws(() => plaintextSize(1.5), TypeError);
    assert.throws(() => plaintextSize("100"), TypeError);
  });
});
