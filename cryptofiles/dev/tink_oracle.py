"""Tink as an independent oracle for our streaming format.

Builds a Tink ``StreamingAead`` primitive around one of *our* raw 32-byte file keys, so that the
format tests can check that ``cryptofiles.crypto`` produces and accepts exactly what Tink's
AES256_GCM_HKDF_1MB key template does, and the bench can time Tink beside us (the encrypt_only row's
baseline). Only Tink's public API is used (proto messages + ``proto_keyset_format`` with the
secret-key access token); nothing here re-implements the format.

One copy for both, and here: the bench must not import the test package, and the tests should not
import the bench. The service never imports this module; Tink is a dev dependency
(requirements-dev.txt), so the layering rule "only crypto/ touches AEAD primitives" is about the
service's own encryption, which this module does not do.
"""

from __future__ import annotations

import functools
import io

# tink ships no type information (pyproject sets ignore_missing_imports); Any is fine for an oracle.
import tink
from tink import secret_key_access, streaming_aead
from tink.proto import aes_gcm_hkdf_streaming_pb2, common_pb2, tink_pb2

SEGMENT_SIZE = 1 << 20
_TYPE_URL = "type.googleapis.com/google.crypto.tink.AesGcmHkdfStreamingKey"
_KEY_ID = 1  # arbitrary; with OutputPrefixType RAW it never appears in ciphertext


@functools.cache
def _register() -> None:
    streaming_aead.register()


def tink_streaming_aead(key: bytes) -> streaming_aead.StreamingAead:
    """StreamingAead for ``key`` with the AES256_GCM_HKDF_1MB parameters."""
    if len(key) != 32:
        raise ValueError("key must be 32 bytes")
    _register()
    proto_key = aes_gcm_hkdf_streaming_pb2.AesGcmHkdfStreamingKey(
        version=0,
        key_value=key,
        params=aes_gcm_hkdf_streaming_pb2.AesGcmHkdfStreamingParams(
            ciphertext_segment_size=SEGMENT_SIZE,
            derived_key_size=32,
            hkdf_hash_type=common_pb2.SHA256,
        ),
    )
    keyset = tink_pb2.Keyset(
        primary_key_id=_KEY_ID,
        key=[
            tink_pb2.Keyset.Key(
                key_data=tink_pb2.KeyData(
                    type_url=_TYPE_URL,
                    value=proto_key.SerializeToString(),
                    key_material_type=tink_pb2.KeyData.SYMMETRIC,
                ),
                status=tink_pb2.ENABLED,
                key_id=_KEY_ID,
                output_prefix_type=tink_pb2.RAW,
            )
        ],
    )
    handle = tink.proto_keyset_format.parse(keyset.SerializeToString(), secret_key_access.TOKEN)
    primitive: streaming_aead.StreamingAead = handle.primitive(streaming_aead.StreamingAead)
    return primitive


class _KeepOpen(io.BytesIO):
    """BytesIO whose close() is a no-op, so we can read it after Tink closes it."""

    def close(self) -> None:
        pass


def tink_encrypt(key: bytes, plaintext: bytes, associated_data: bytes = b"") -> bytes:
    """Encrypt with Tink; the result is the complete streaming ciphertext."""
    sink = _KeepOpen()
    with tink_streaming_aead(key).new_encrypting_stream(sink, associated_data) as enc:
        enc.write(plaintext)
    return sink.getvalue()


def tink_decrypt(key: bytes, ciphertext: bytes, associated_data: bytes = b"") -> bytes:
    """Decrypt with Tink; raises ``tink.TinkError`` if Tink rejects the ciphertext."""
    source = io.BytesIO(ciphertext)
    with tink_streaming_aead(key).new_decrypting_stream(source, associated_data) as dec:
        return bytes(dec.read())


# Re-exported so tests can expect Tink's rejections without importing tink themselves.
TinkError: type[Exception] = tink.TinkError
