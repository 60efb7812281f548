// Upload one file with tus-js-client under Node, as tests/test_tus_interop.py drives it.
//
//   node upload.mjs ENDPOINT FILE CHUNK_SIZE [FLAG]...    FLAG: --with-upload, --default-retries,
//                                                          --parallel-uploads
//
// The token comes in CRYPTOFILES_TOKEN, not in argv, where other local users could read it.
//
// Prints {"url": ..., "answers": [...]} as JSON on success: the upload URL and every answer the
// client got (method, status, Upload-Offset or null), in order. Exits 1 with the error on stderr
// otherwise.
// CHUNK_SIZE is a number of bytes or "Infinity" (one PATCH for the whole rest). --with-upload sends
// the first chunk in the creation request (the creation-with-upload extension); --default-retries
// keeps tus-js-client's own retry schedule (0, 1, 3 and 5 s) instead of ours; --parallel-uploads
// sends the file as two partial uploads and concatenates them (the concatenation extension).
import { createReadStream } from 'node:fs'
import { basename } from 'node:path'
import { Upload } from 'tus-js-client'

const FLAGS = ['--with-upload', '--default-retries', '--parallel-uploads']
const [endpoint, path, chunkArg, ...flags] = process.argv.slice(2)
const token = process.env.CRYPTOFILES_TOKEN
if (!endpoint || !path || !chunkArg || !token || flags.some((f) => !FLAGS.includes(f))) {
  console.error(`usage: node upload.mjs ENDPOINT FILE CHUNK_SIZE ${FLAGS.join(' ')}`)
  process.exit(2)
}
// Retried after a cut, a 409 or a 5xx; enough attempts for several cuts in a row.
const retries = flags.includes('--default-retries')
  ? {}
  : { retryDelays: [0, 200, 500, 1000, 2000, 3000, 5000] }

const answers = []
// An fs.ReadStream with a path: tus-js-client reopens the file at each offset it resumes from,
// so it never holds more than one chunk.
const upload = new Upload(createReadStream(path), {
  endpoint,
  chunkSize: Number(chunkArg),
  uploadDataDuringCreation: flags.includes('--with-upload'),
  parallelUploads: flags.includes('--parallel-uploads') ? 2 : 1,
  headers: { 'x-access-tokens': token },
  ...retries,
  metadata: { filename: basename(path), filetype: 'application/x-interop' },
  onAfterResponse (req, res) {
    const offset = res.getHeader('Upload-Offset')
    answers.push({
      method: req.getMethod(),
      status: res.getStatus(),
      offset: offset === undefined ? null : Number(offset),
    })
  },
  onError (error) {
    console.error(`upload failed: ${error}`)
    process.exit(1)
  },
  onSuccess () {
    // Exit once written: Node's keep-alive agent may hold idle connections open for a while.
    process.stdout.write(JSON.stringify({ url: upload.url, answers }) + '\n', () => process.exit(0))
  },
})
upload.start()
