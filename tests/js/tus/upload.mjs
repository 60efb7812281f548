// Upload one file with tus-js-client under Node, as tests/test_tus_interop.py drives it.
//
//   node upload.mjs ENDPOINT FILE CHUNK_SIZE [with-upload]
//
// The token comes in CRYPTOFILES_TOKEN, not in argv, where other local users could read it.
//
// Prints {"url": ..., "offsets": [...]} as JSON on success: the upload URL and every offset the
// server reported (HEAD and PATCH answers), in order. Exits 1 with the error on stderr otherwise.
// CHUNK_SIZE is a number of bytes or "Infinity" (one PATCH for the whole rest); "with-upload" sends
// the first chunk in the creation request (the creation-with-upload extension).
import { createReadStream } from 'node:fs'
import { basename } from 'node:path'
import { Upload } from 'tus-js-client'

const [endpoint, path, chunkArg, mode] = process.argv.slice(2)
const token = process.env.CRYPTOFILES_TOKEN
if (!endpoint || !path || !chunkArg || !token || ![undefined, 'with-upload'].includes(mode)) {
  console.error('usage: CRYPTOFILES_TOKEN=... node upload.mjs ENDPOINT FILE CHUNK_SIZE [with-upload]')
  process.exit(2)
}

const offsets = []
// An fs.ReadStream with a path: tus-js-client reopens the file at each offset it resumes from,
// so it never holds more than one chunk.
const upload = new Upload(createReadStream(path), {
  endpoint,
  chunkSize: Number(chunkArg),
  uploadDataDuringCreation: mode === 'with-upload',
  headers: { 'x-access-tokens': token },
  // Retried after a cut, a 409 or a 5xx; enough attempts for several cuts in a row.
  retryDelays: [0, 200, 500, 1000, 2000, 3000, 5000],
  metadata: { filename: basename(path), filetype: 'application/x-interop' },
  onAfterResponse (req, res) {
    const offset = res.getHeader('Upload-Offset')
    if (offset !== undefined) {
      offsets.push({ method: req.getMethod(), status: res.getStatus(), offset: Number(offset) })
    }
  },
  onError (error) {
    console.error(`upload failed: ${error}`)
    process.exit(1)
  },
  onSuccess () {
    // Exit once written: Node's keep-alive agent may hold idle connections open for a while.
    process.stdout.write(JSON.stringify({ url: upload.url, offsets }) + '\n', () => process.exit(0))
  },
})
upload.start()
