"""Random secrets for machines (SMTP passwords, API keys) and their keyed hashes.

They are random (≥ 128 bits), so a fast keyed hash is as safe as a slow one and keeps
AUTH fast: HMAC-SHA256 under settings.HASH_KEY (DESIGN invariant 5).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from django.conf import settings


def new_secret(nbytes: int = 24) -> str:
    """A random URL-safe secret that never starts with "-", which command-line tools
    (swaks, curl) would read as an option."""
    while True:
        secret = secrets.token_urlsafe(nbytes)
        if not secret.startswith("-"):
            return secret


def keyed_hash(value: str, *, purpose: str) -> str:
    key = hashlib.sha256(f"sendmsg {purpose}\0{settings.HASH_KEY}".encode()).digest()
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


def matches(value: str, stored_hash: str, *, purpose: str) -> bool:
    return hmac.compare_digest(keyed_hash(value, purpose=purpose), stored_hash)
