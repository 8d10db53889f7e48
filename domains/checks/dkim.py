"""DKIM: does DNS serve each of our keys at its selector, whole and current?"""

from __future__ import annotations

import base64

import dns.resolver
from cryptography.hazmat.primitives.serialization import load_der_public_key

from domains.checks import dnsutil
from domains.checks.results import CheckResult, error, ok, unknown, warning
from domains.models import DkimKey, KeyState

MIN_RSA_BITS = 1024  # RFC 8301: verifiers must refuse smaller keys
GOOD_RSA_BITS = 2048


def describe_published(value: str) -> tuple[str, int | None]:
    """(key type, size in bits) of a published DKIM record's key, as a verifier sees it."""
    record = dnsutil.tags(value)
    kind = record.get("k", "rsa").lower()
    p = record.get("p", "")
    if not p:
        return kind, None
    try:
        raw = base64.b64decode(p, validate=True)
    except ValueError:
        return kind, None
    if kind == "ed25519":
        return kind, len(raw) * 8
    try:
        return kind, load_der_public_key(raw).key_size
    except ValueError:
        return kind, None


def check_key(
    key: DkimKey, resolver: dns.resolver.Resolver, retired: frozenset[str] = frozenset()
) -> tuple[str, str]:
    """('ok'|'missing'|'revoked'|'stale'|'different'|'unknown', message) for one of our keys.

    ``retired`` holds the public keys this domain signed with before: finding one of them
    at a current selector means a record was copied from an old setup.
    """
    name = key.record_name
    try:
        values = [v for v in dnsutil.txt(resolver, name) if "p=" in v]
    except dnsutil.DnsFailure as exc:
        return "unknown", str(exc)
    if not values:
        return "missing", f"No DKIM record at {name}: publish its TXT record."
    published = [dnsutil.tags(v).get("p", "") for v in values]
    if key.public_key in published:
        kind, bits = describe_published(values[published.index(key.public_key)])
        return "ok", f"{name} publishes our {kind.upper()} {bits}-bit key."
    if all(p == "" for p in published):
        return "revoked", f"The record at {name} has an empty p=: the key is revoked there."
    if retired.intersection(published):
        return "stale", (
            f"The record at {name} holds one of this domain's retired keys: replace its "
            "value with the current record."
        )
    return "different", (
        f"The key at {name} is not the one we sign with: copy the record's value again, whole "
        "(a key cut at 255 characters is the usual cause)."
    )


def check_dkim(keys: list[DkimKey], resolver: dns.resolver.Resolver) -> tuple[CheckResult, set]:
    """The DKIM verdict over the domain's signing and pending keys, and the selectors seen.

    Signing keys must all be published (error otherwise). A pending key (rotation or
    Ed25519) not yet published is a warning: mail still verifies with the current key.
    """
    retired = frozenset(k.public_key for k in keys if k.state == KeyState.RETIRED)
    signing = [k for k in keys if k.state == KeyState.ACTIVE]
    pending = [k for k in keys if k.state == KeyState.PENDING]
    if not signing:
        return error("dkim", "No DKIM key signs for this domain: generate one."), set()
    outcomes = {key: check_key(key, resolver, retired) for key in signing + pending}
    seen = {key.selector for key, (state, _) in outcomes.items() if state == "ok"}
    failures = [(k, o) for k, o in outcomes.items() if k in signing and o[0] != "ok"]
    details = {
        "keys": [
            {
                "selector": k.selector,
                "algorithm": k.algorithm,
                "state": k.state,
                "dns": o[0],
                "message": o[1],
            }
            for k, o in outcomes.items()
        ]
    }
    if any(state == "unknown" for _, (state, _m) in failures):
        message = " ".join(m for _, (s, m) in failures if s == "unknown")
        return unknown("dkim", message, **details), seen
    if failures:
        return error("dkim", " ".join(m for _, (_s, m) in failures), **details), seen
    weak = [k for k in signing if k.algorithm == "rsa" and (k.bits or 0) < GOOD_RSA_BITS]
    waiting = [k for k in pending if k.selector not in seen]
    messages = [outcomes[k][1] for k in signing]
    if weak:
        messages.append(f"Keys under {GOOD_RSA_BITS} bits are weak: rotate to a new key.")
        return warning("dkim", " ".join(messages), points=15, **details), seen
    if waiting:
        names = ", ".join(k.record_name for k in waiting)
        messages.append(
            f"Publish the new key's record at {names}; signing switches to it once it is seen."
        )
        return warning("dkim", " ".join(messages), points=30, **details), seen
    return ok("dkim", " ".join(messages), **details), seen
