// Decrypts, in the browser, the files this service stores: Tink's AES-GCM-HKDF streaming format
// (AES256_GCM_HKDF_1MB, associated data empty), as cryptofiles/crypto/stream.py writes it.
//
//   header    = 0x28 (40, its length) || salt (32) || nonce prefix (7)
//   key       = HKDF-SHA256(ikm = file key, salt, info = empty) -> AES-256-GCM key
//   segment i = AES-GCM(key, nonce = prefix || uint32_be(i) || last flag (1 byte), aad empty)
//   file      = header || segment 0 || segment 1 || ... || segment n-1
//
// Ciphertext segments are 1 MiB including their 16-byte tag, except that segment 0 is 40 bytes
// shorter (header + segment 0 fill 1 MiB) and the last one may be shorter (at least a tag). The
// index in the nonce stops reordered, dropped or duplicated segments; the last flag stops cutting
// the file at a segment boundary and appending to it.
//
// Look-ahead rule: nothing in a segment says whether it is the last one; the last is the one no
// byte follows, and a full-size last segment exists (a plaintext that fills its segments). So a
// segment is opened as "not last" only once a byte after it has arrived, and what remains when
// the input ends is opened as "last". Deciding earlier would reject such files.
//
// Streaming caveat: each plaintext chunk is authentic and in its place, but a cut-short file is
// only detected at the end, so output must not be treated as a complete file unless the stream
// closes without error (the page discards what it wrote when the stream errors).
//
// Standard JavaScript only (WebCrypto, WHATWG streams): runs in pages, workers and Node 20.

export const SEGMENT_SIZE = 1 << 20;
export const HEADER_SIZE = 40;
export const TAG_SIZE = 16;

export const KEY_SIZE = 32;
const SALT_SIZE = 32;
const FIRST_CIPHER = SEGMENT_SIZE - HEADER_SIZE; // ciphertext of a full segment 0, header excluded
const MAX_SEGMENTS = 2 ** 32; // the index is a uint32 in the nonce; beyond it nonces would repeat

// Messages are for a person; none ever includes key material or data.
const CUT_HEADER = "The file is cut short (no complete header).";
const BAD_HEADER = "Not a file in this format (bad header).";

export class DecryptionError extends Error {
  constructor(message) {
    super(message);
    this.name = "DecryptionError";
  }
}

export class KeyFormatError extends Error {
  constructor(message) {
    super(message);
    this.name = "KeyFormatError";
  }
}

// Either alphabet (a key that went through a URL may be URL-safe), padding only at the end.
const BASE64 = /^[A-Za-z0-9+/_-]+={0,2}$/;

/** The 32-byte key that `text` encodes in base64 (as cryptofiles/crypto/keytext.py reads it). */
export function decodeKey(text) {
  // The errors never repeat the text: it may be a key pasted in the wrong place.
  const trimmed = typeof text === "string" ? text.trim() : "";
  if (!BASE64.test(trimmed)) throw new KeyFormatError("The key is not valid base64.");
  const unpadded = trimmed.replace(/=+$/, "").replaceAll("-", "+").replaceAll("_", "/");
  let binary;
  try {
    binary = atob(unpadded + "=".repeat(-unpadded.length & 3));
  } catch {
    throw new KeyFormatError("The key is not valid base64."); // a length no byte string has
  }
  if (binary.length !== KEY_SIZE) {
    throw new KeyFormatError(`The key must decode to ${KEY_SIZE} bytes, got ${binary.length}.`);
  }
  return Uint8Array.from(binary, (c) => c.charCodeAt(0));
}

/** A non-extractable HKDF CryptoKey for the 32-byte file key, so script cannot read it back. */
export async function importKey(keyBytes) {
  checkKeyBytes(keyBytes);
  return crypto.subtle.importKey("raw", keyBytes, "HKDF", false, ["deriveKey"]);
}

function checkKeyBytes(keyBytes) {
  if (!(keyBytes instanceof Uint8Array) || keyBytes.length !== KEY_SIZE) {
    throw new KeyFormatError(`The key must be ${KEY_SIZE} bytes.`);
  }
}

/** Plaintext length of a file of `ciphertextSize` bytes (the inverse of layout.ciphertext_size). */
export function plaintextSize(ciphertextSize) {
  if (!Number.isSafeInteger(ciphertextSize)) throw new TypeError("a size must be an integer");
  const body = ciphertextSize - HEADER_SIZE;
  if (body < TAG_SIZE) throw new DecryptionError("The file is too short to be in this format.");
  if (body <= FIRST_CIPHER) return body - TAG_SIZE;
  const count = 1 + Math.ceil((body - FIRST_CIPHER) / SEGMENT_SIZE);
  // A last segment shorter than a tag is impossible, as in layout.py (which explains why an
  // empty last segment after a full one is accepted though never written).
  if (body - FIRST_CIPHER - (count - 2) * SEGMENT_SIZE < TAG_SIZE) {
    throw new DecryptionError("The file has a length no file in this format can have.");
  }
  return body - count * TAG_SIZE;
}

/**
 * A TransformStream from ciphertext chunks of any sizes to plaintext (one chunk per segment).
 * `key` is a CryptoKey from importKey or the raw 32-byte Uint8Array. Any failure errors the
 * stream with a DecryptionError. At most about two segments are held, whatever the file size.
 */
export function decryptStream(key) {
  if (key instanceof Uint8Array) checkKeyBytes(key); // a bad key throws now, not on first use
  const pending = new ByteQueue();
  let hkdfKey = null;
  let opener = null; // set once the header is read
  return new TransformStream({
    async start() {
      hkdfKey = key instanceof Uint8Array ? await importKey(key) : key;
    },
    async transform(chunk, controller) {
      pending.push(asBytes(chunk));
      if (opener === null) {
        // Fail on the first byte rather than after reading a whole segment of something else.
        if (pending.size > 0 && pending.firstByte() !== HEADER_SIZE) {
          throw new DecryptionError(BAD_HEADER);
        }
        if (pending.size < HEADER_SIZE) return;
        opener = await SegmentOpener.create(hkdfKey, pending.take(HEADER_SIZE));
      }
      // Strictly more than a segment: see the look-ahead rule at the top.
      while (pending.size > opener.fullLength()) {
        controller.enqueue(await opener.open(pending.take(opener.fullLength()), false));
      }
    },
    async flush(controller) {
      if (opener === null) throw new DecryptionError(CUT_HEADER);
      controller.enqueue(await opener.open(pending.take(pending.size), true));
    },
  });
}

/** Decrypts a whole ciphertext held in memory (small files and tests). */
export async function decryptBytes(key, ciphertextBytes) {
  const input = new ReadableStream({
    start(controller) {
      controller.enqueue(asBytes(ciphertextBytes));
      controller.close();
    },
  });
  // A reader loop, not `for await`: not every browser can iterate a ReadableStream yet.
  const reader = input.pipeThrough(decryptStream(key)).getReader();
  const output = new ByteQueue();
  for (let part = await reader.read(); !part.done; part = await reader.read()) {
    output.push(part.value);
  }
  return output.take(output.size);
}

class SegmentOpener {
  static async create(hkdfKey, header) {
    // The salt and prefix are not authenticated themselves: altering either changes the key or
    // the nonces, so segment 0 then fails its check.
    const salt = header.slice(1, 1 + SALT_SIZE);
    const aesKey = await crypto.subtle.deriveKey(
      { name: "HKDF", hash: "SHA-256", salt, info: new Uint8Array(0) }, // info = associated data
      hkdfKey,
      { name: "AES-GCM", length: 256 },
      false,
      ["decrypt"],
    );
    return new SegmentOpener(aesKey, header.slice(1 + SALT_SIZE));
  }

  constructor(aesKey, prefix) {
    this.aesKey = aesKey;
    this.nonce = new Uint8Array(12); // prefix || uint32_be(index) || last flag
    this.nonce.set(prefix);
    this.index = 0;
  }

  fullLength() {
    return this.index === 0 ? FIRST_CIPHER : SEGMENT_SIZE;
  }

  async open(segment, last) {
    const i = this.index;
    if (i >= MAX_SEGMENTS) throw new DecryptionError("The file is too large for this format.");
    if (segment.length < TAG_SIZE) {
      throw new DecryptionError(`The file is cut short (segment ${i} is incomplete).`);
    }
    new DataView(this.nonce.buffer).setUint32(7, i);
    this.nonce[11] = last ? 1 : 0;
    let plain;
    try {
      const params = { name: "AES-GCM", iv: this.nonce };
      plain = await crypto.subtle.decrypt(params, this.aesKey, segment);
    } catch (error) {
      if (error?.name !== "OperationError") throw error; // a bug here, not a bad file
      throw new DecryptionError(
        `The file failed its integrity check (segment ${i}): ` +
          "wrong key, or the data was altered or cut short.",
      );
    }
    this.index += 1;
    return new Uint8Array(plain);
  }
}

// Pending input as a list of chunks, so that taking n bytes copies only those bytes (and not at
// all when one chunk holds them), however small the chunks the network delivers.
class ByteQueue {
  constructor() {
    this.chunks = [];
    this.size = 0;
  }

  push(bytes) {
    if (bytes.length === 0) return;
    this.chunks.push(bytes);
    this.size += bytes.length;
  }

  firstByte() {
    return this.chunks[0][0];
  }

  take(n) {
    if (n === 0) return new Uint8Array(0);
    this.size -= n;
    const head = this.chunks[0];
    if (head.length >= n) {
      if (head.length === n) this.chunks.shift();
      else this.chunks[0] = head.subarray(n);
      return head.subarray(0, n);
    }
    const out = new Uint8Array(n);
    let filled = 0;
    let used = 0; // whole chunks consumed, removed in one splice so many tiny chunks stay linear
    while (filled < n) {
      const chunk = this.chunks[used];
      const part = Math.min(chunk.length, n - filled);
      out.set(chunk.subarray(0, part), filled);
      filled += part;
      if (part === chunk.length) used += 1;
      else this.chunks[used] = chunk.subarray(part);
    }
    this.chunks.splice(0, used);
    return out;
  }
}

function asBytes(chunk) {
  if (chunk instanceof Uint8Array) return chunk;
  if (chunk instanceof ArrayBuffer) return new Uint8Array(chunk);
  if (ArrayBuffer.isView(chunk)) {
    return new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  }
  throw new TypeError("ciphertext chunks must be bytes (Uint8Array)");
}
