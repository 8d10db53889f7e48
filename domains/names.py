"""Domain name normalisation: IDNA 2008 (the `idna` package), lower case, no trailing dot."""

from __future__ import annotations

from functools import lru_cache

import idna


class InvalidDomain(ValueError):
    pass


@lru_cache(maxsize=4096)  # every accepted message asks for its domains again
def normalize_domain(name: str) -> str:
    """The ASCII (A-label) form of ``name``; raises InvalidDomain with a readable reason."""
    cleaned = name.strip().rstrip(".").lower()
    if not cleaned or "." not in cleaned:
        raise InvalidDomain(f"{name!r} is not a domain name (it needs at least one dot)")
    try:
        ascii_name = idna.encode(cleaned, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise InvalidDomain(f"{name!r} is not a valid domain name: {exc}") from None
    if len(ascii_name) > 253:
        raise InvalidDomain(f"{name!r} is longer than 253 characters")
    return ascii_name


def display_domain(ascii_name: str) -> str:
    """The Unicode form for people; falls back to the stored form."""
    try:
        return idna.decode(ascii_name)
    except idna.IDNAError:
        return ascii_name


def domain_of(address: str) -> str:
    """The normalised domain of an email address; raises InvalidDomain."""
    _, at, domain = address.rpartition("@")
    if not at:
        raise InvalidDomain(f"{address!r} is not an email address")
    return normalize_domain(domain)
