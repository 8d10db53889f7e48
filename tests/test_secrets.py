"""DESIGN invariant 5: no secret stored in clear."""

from __future__ import annotations

import base64
import re

import pytest
from cryptography.hazmat.primitives import serialization
from django.db import connection

from delivery.credentials import (
    check_api_key,
    check_smtp_login,
    create_api_key,
    create_smtp_credential,
)
from delivery.keyed_hash import new_secret
from domains import crypto
from domains.models import DkimKey
from domains.tenancy import add_domain

pytestmark = pytest.mark.django_db


def raw_row(table: str, pk: int) -> bytes:
    """Every column of one row as stored, concatenated (what a stolen backup shows)."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {table} WHERE id = %s", [pk])
        row = cursor.fetchone()
    return b"|".join(
        bytes(value) if isinstance(value, (bytes, memoryview)) else str(value).encode()
        for value in row
    )


def test_dkim_private_key_is_encrypted_in_the_database(owner):
    domain = add_domain(tenant=owner[0], name="acme.test")
    key = domain.active_dkim_key()
    pem = key.private_key_pem()
    assert pem.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    private = serialization.load_pem_private_key(pem, password=None)
    der = private.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    body = b"".join(pem.splitlines()[1:-1])  # the base64 inside the PEM

    stored = raw_row(DkimKey._meta.db_table, key.pk)
    assert b"PRIVATE KEY" not in stored
    assert body[:64] not in stored
    assert base64.b64encode(der)[:64] not in stored
    assert der[:64] not in stored
    # the public half is there, as it must be published
    assert key.public_key.encode() in stored

    with pytest.raises(crypto.DecryptionError):
        crypto.decrypt(bytes(key.private_key_encrypted), secret="another key entirely")


def test_smtp_password_and_api_key_are_stored_only_as_keyed_hashes(owner):
    credential, password = create_smtp_credential(tenant=owner[0])
    api_key, key = create_api_key(tenant=owner[0])
    assert len(password) >= 22 and len(key.split("_", 2)[2]) >= 22  # ≥ 128 bits of randomness

    for table, pk, secret in (
        (credential._meta.db_table, credential.pk, password),
        (api_key._meta.db_table, api_key.pk, key),
    ):
        stored = raw_row(table, pk)
        assert secret.encode() not in stored
        assert re.search(rb"\|[0-9a-f]{64}\|", stored)  # an HMAC-SHA256, not Django's hasher

    assert check_smtp_login(credential.username, password).tenant_id == owner[0].pk
    assert check_smtp_login(credential.username, password[:-1]) is None
    assert check_api_key(key).pk == api_key.pk
    assert check_api_key(key + "x") is None


def test_hashes_depend_on_the_server_key(owner, settings):
    credential, password = create_smtp_credential(tenant=owner[0])
    settings.HASH_KEY = "a different server key"
    assert check_smtp_login(credential.username, password) is None


def test_generated_secrets_never_start_with_a_dash():
    """A password starting with "-" reads as an option to swaks or curl; one in 64 random
    URL-safe secrets would."""
    assert not any(new_secret().startswith("-") for _ in range(2000))
