"""Generating DKIM key pairs for a domain."""

from __future__ import annotations

import base64
import secrets

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.utils import timezone

from domains import crypto
from domains.models import DkimKey, Domain, KeyAlgorithm

RSA_BITS = 2048


def new_selector() -> str:
    """A dated selector that is unique per key: ``sm20261128a1b2``."""
    return f"sm{timezone.now():%Y%m%d}{secrets.token_hex(2)}"


def generate_dkim_key(*, domain: Domain, bits: int = RSA_BITS) -> DkimKey:
    """Create an RSA key pair for ``domain``; only the public half leaves encrypted storage."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return DkimKey.objects.create(
        domain=domain,
        selector=new_selector(),
        algorithm=KeyAlgorithm.RSA,
        bits=bits,
        public_key=base64.b64encode(der).decode("ascii"),
        private_key_encrypted=crypto.encrypt(pem),
    )
