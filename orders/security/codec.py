"""The payload codec: AES-256-GCM over every payload the project stores in Temporal.

Each payload (its encoding, type metadata and data) is serialized and encrypted whole under the
current key with a random 12-byte nonce; what Temporal stores is a payload with the metadata
``encoding: binary/encrypted`` and ``encryption-key-id: <kid>`` and the data ``nonce ||
ciphertext || tag``. The key id is also the AEAD's associated data, so a payload whose key id
was altered fails to decrypt like one whose bytes were.

Decoding takes any key of the ring, so payloads written before a rotation stay readable, and
passes payloads that are not marked encrypted through unchanged: histories recorded before
encryption was added still replay.

``cryptography`` is imported on first use, not at import: a module that defines a workflow and
imports the data converter (a test's workflow, say) is imported again inside the workflow
sandbox, where re-initialising cryptography's native extension fails.
"""

import os
from collections.abc import Callable, Sequence
from threading import Lock

from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

from orders.security.keys import KeyRing

ENCODING_KEY = "encoding"
ENCRYPTED_ENCODING = b"binary/encrypted"
KEY_ID_KEY = "encryption-key-id"
NONCE_BYTES = 12


class DecryptionError(Exception):
    """A payload marked encrypted cannot be decrypted; the message says why."""


class UnknownKeyError(DecryptionError):
    """A payload was encrypted under a key id that is not among the configured keys."""


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM payload codec; encrypts with the ring's current key, decrypts with any.

    ``keys`` is a ring, or a function returning one that is called once, on first use (so
    importing the project's data converter never needs keys; using it does).
    """

    def __init__(self, keys: KeyRing | Callable[[], KeyRing]) -> None:
        self._ring = keys if isinstance(keys, KeyRing) else None
        self._load = None if isinstance(keys, KeyRing) else keys
        self._lock = Lock()

    def key_ring(self) -> KeyRing:
        """The keys, loaded on the first call; raises ``KeyConfigError`` if there are none."""
        if self._ring is None:
            with self._lock:
                if self._ring is None:
                    assert self._load is not None
                    self._ring = self._load()
        return self._ring

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Encrypt each payload under the current key."""
        return [self.encrypt(payload) for payload in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Decrypt the payloads marked encrypted; pass the others through unchanged."""
        return [self.decrypt(payload) for payload in payloads]

    def encrypt(self, payload: Payload) -> Payload:
        """One payload, encrypted whole under the current key."""
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        key = self.key_ring().current
        nonce = os.urandom(NONCE_BYTES)  # random per payload; never reused with a key
        sealed = AESGCM(key.secret).encrypt(nonce, payload.SerializeToString(), key.key_id.encode())
        return Payload(
            metadata={ENCODING_KEY: ENCRYPTED_ENCODING, KEY_ID_KEY: key.key_id.encode()},
            data=nonce + sealed,
        )

    def decrypt(self, payload: Payload) -> Payload:
        """One payload decrypted, or returned as it is if it is not marked encrypted."""
        if payload.metadata.get(ENCODING_KEY) != ENCRYPTED_ENCODING:
            return payload
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        ring = self.key_ring()
        key_id = payload.metadata.get(KEY_ID_KEY, b"").decode(errors="replace")
        key = ring.find(key_id)
        if key is None:
            raise UnknownKeyError(
                f"payload is encrypted with key {key_id!r}, which is not among the configured "
                f"keys ({', '.join(ring.ids)} from {ring.source}); add that key to read it "
                "(keep retired keys listed after the current one)"
            )
        if len(payload.data) <= NONCE_BYTES:
            raise DecryptionError(f"payload encrypted with key {key_id!r} is truncated")
        nonce, sealed = payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:]
        try:
            plain = AESGCM(key.secret).decrypt(nonce, sealed, key_id.encode())
        except InvalidTag:
            raise DecryptionError(
                f"payload encrypted with key {key_id!r} failed authentication: its bytes or "
                "its key id were altered, or the key with that id is not the one that "
                "encrypted it"
            ) from None
        decrypted = Payload()
        decrypted.ParseFromString(plain)
        return decrypted
