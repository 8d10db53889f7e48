"""Encryption of DKIM private keys at rest.

Fernet (AES-128-CBC with HMAC-SHA256) under a key derived from
``settings.DKIM_ENCRYPTION_KEY``: the database alone never yields a usable key, and a
ciphertext made under another key fails to decrypt instead of yielding garbage.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings


class DecryptionError(Exception):
    """The ciphertext was not made with the configured key (or was altered)."""


def _fernet(secret: str | None = None) -> Fernet:
    material = (secret if secret is not None else settings.DKIM_ENCRYPTION_KEY).encode()
    key = hashlib.sha256(b"sendmsg dkim key encryption\0" + material).digest()
    return Fernet(base64.urlsafe_b64encode(key))


def encrypt(plaintext: bytes, *, secret: str | None = None) -> bytes:
    return _fernet(secret).encrypt(plaintext)


def decrypt(ciphertext: bytes, *, secret: str | None = None) -> bytes:
    try:
        return _fernet(secret).decrypt(bytes(ciphertext))
    except InvalidToken:
        raise DecryptionError("DKIM private key does not decrypt with this key") from None
