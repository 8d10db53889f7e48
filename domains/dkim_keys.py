"""DKIM key pairs for a domain: generation, rotation, and switching once DNS shows them."""

from __future__ import annotations

import base64
import secrets

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from django.db import transaction
from django.utils import timezone

from domains import crypto
from domains.models import (
    DkimKey,
    Domain,
    DomainEvent,
    DomainEventType,
    KeyAlgorithm,
    KeyState,
)

RSA_BITS = 2048


class KeyActionError(ValueError):
    """A key action that cannot be done now; the message says why."""


def new_selector() -> str:
    """A dated selector that is unique per key: ``sm20261128a1b2``."""
    return f"sm{timezone.now():%Y%m%d}{secrets.token_hex(2)}"


def _rsa_pair(bits: int) -> tuple[bytes, str]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem, base64.b64encode(der).decode("ascii")


def _ed25519_pair() -> tuple[bytes, str]:
    # RFC 8463: p= is the raw 32-byte public key; dkimpy signs with the base64 raw seed.
    private = ed25519.Ed25519PrivateKey.generate()
    seed = private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    public = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return base64.b64encode(seed), base64.b64encode(public).decode("ascii")


def generate_dkim_key(
    *,
    domain: Domain,
    algorithm: str = KeyAlgorithm.RSA,
    bits: int = RSA_BITS,
    state: str = KeyState.PENDING,
) -> DkimKey:
    """Create a key pair for ``domain``; only the public half leaves encrypted storage."""
    if algorithm == KeyAlgorithm.RSA:
        private, public = _rsa_pair(bits)
    else:
        private, public = _ed25519_pair()
        bits = 256
    return DkimKey.objects.create(
        domain=domain,
        selector=new_selector(),
        algorithm=algorithm,
        bits=bits,
        public_key=public,
        private_key_encrypted=crypto.encrypt(private),
        state=state,
        activated_at=timezone.now() if state == KeyState.ACTIVE else None,
    )


def start_rotation(*, domain: Domain, algorithm: str = KeyAlgorithm.RSA) -> DkimKey:
    """The next key of ``algorithm``, pending until its record is seen in DNS.

    The current key of that algorithm signs until then. For Ed25519 on a domain that
    has none yet, this starts dual signing (RFC 8463) once the record is seen.
    """
    if domain.dkim_keys.filter(algorithm=algorithm, state=KeyState.PENDING).exists():
        raise KeyActionError(
            "A new key is already waiting for its DNS record: publish it, then check."
        )
    return generate_dkim_key(domain=domain, algorithm=algorithm)


def activate_seen_keys(*, domain: Domain, seen_selectors: set[str]) -> list[DomainEvent]:
    """Switch signing to each pending key whose record DNS now serves; retire the old one."""
    events = []
    pending = domain.dkim_keys.filter(state=KeyState.PENDING, selector__in=seen_selectors)
    for key in pending:
        now = timezone.now()
        with transaction.atomic():
            for old in domain.dkim_keys.filter(algorithm=key.algorithm, state=KeyState.ACTIVE):
                old.state, old.retired_at = KeyState.RETIRED, now
                old.save(update_fields=["state", "retired_at"])
                events.append(
                    DomainEvent.objects.create(
                        domain=domain,
                        tenant_id=domain.tenant_id,
                        type=DomainEventType.KEY_RETIRED,
                        message=f"Key {old.selector} stopped signing; its record can be "
                        f"removed after {old.removable_after:%Y-%m-%d}.",
                    )
                )
            key.state, key.activated_at = KeyState.ACTIVE, now
            key.save(update_fields=["state", "activated_at"])
            events.append(
                DomainEvent.objects.create(
                    domain=domain,
                    tenant_id=domain.tenant_id,
                    type=DomainEventType.KEY_ACTIVATED,
                    message=f"Key {key.selector} ({key.get_algorithm_display()}) is in DNS "
                    "and now signs.",
                )
            )
    return events
