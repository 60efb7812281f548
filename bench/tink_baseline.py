"""Tink's StreamingAead (AES256_GCM_HKDF_1MB) around one of our raw 32-byte file keys: the
encrypt_only row's baseline. The bench's own copy, so that it does not depend on the test package
(tests/tink_oracle.py builds the same primitive for the format tests). Only Tink's public API."""

from __future__ import annotations

import functools

# tink ships no type information (pyproject sets ignore_missing_imports).
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
