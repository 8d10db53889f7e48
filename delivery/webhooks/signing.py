"""The ``Sendmsg-Signature`` header of a webhook request, and the endpoint secrets.

``Sendmsg-Signature: t=<unix time>,v1=<hex>[,v1=<hex>]``, each ``v1`` being
HMAC-SHA256 keyed with an endpoint secret (its UTF-8 bytes) over ``f"{t}."`` followed by
the exact body bytes. After a rotation there are two ``v1`` values for a while, one per
secret; a receiver accepts the request when any of them matches its secret. The README's
"Webhooks" section has a verification snippet (and a test runs it).

Secrets are random (192 bits) and kept encrypted under the key that encrypts DKIM keys
(domains/crypto.py): the server needs them back to sign, so a hash would not do.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime

from delivery.keyed_hash import new_secret as random_secret
from delivery.models import WebhookEndpoint
from domains import crypto

SIGNATURE_HEADER = "Sendmsg-Signature"
SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    return SECRET_PREFIX + random_secret(24)


def encrypt_secret(secret: str) -> bytes:
    return crypto.encrypt(secret.encode())


def decrypt_secret(ciphertext: bytes) -> str:
    return crypto.decrypt(ciphertext).decode()


def signing_secrets(endpoint: WebhookEndpoint, *, now: datetime) -> list[str]:
    """The secret, then the previous one while it still signs (after a rotation)."""
    secrets = [decrypt_secret(endpoint.secret_encrypted)]
    previous_until = endpoint.previous_secret_until
    if endpoint.previous_secret_encrypted and previous_until and previous_until > now:
        secrets.append(decrypt_secret(endpoint.previous_secret_encrypted))
    return secrets


def signature(secret: str, *, timestamp: int, body: bytes) -> str:
    signed = f"{timestamp}.".encode() + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def signature_header(secrets: list[str], *, timestamp: int, body: bytes) -> str:
    values = [f"v1={signature(s, timestamp=timestamp, body=body)}" for s in secrets]
    return ",".join([f"t={timestamp}", *values])
