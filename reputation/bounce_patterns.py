"""Why a delivery failed, in our own words: hard or soft, and a reason code.

One function, ``classify``, reads an SMTP reply (code, RFC 3463 enhanced code, text),
whether the relay got it synchronously or a DSN reported it later; the relay's events
and the inbound MX's events therefore say the same thing about the same reply.

The enhanced status code decides first when there is one: ``DECIDES`` maps the codes
whose meaning is unambiguous. For the rest (``x.7.1`` is a policy refusal or a spam
block depending on the words; Microsoft uses ``5.1.10`` for an unknown recipient where
RFC 7505 means a null MX), the words decide through ``PATTERNS``, and ``DEFAULTS`` says
what the code means when no pattern matches. Without an enhanced code the patterns
decide alone.

Hard means the address itself will not take mail (no such mailbox, a disabled one, a
domain that does not exist or does not take mail for it): the address is suppressed at
once. Everything else is soft: a temporary failure, and also permanent refusals that
are about the message or the sender (too large, spam, policy) or that we cannot read.
Those still bounce the recipient, but they take an address off a tenant's list only when
they repeat (SENDMSG_SOFT_BOUNCE_SUPPRESS_COUNT). A transient reply (4xx, 4.x.x) is
always soft, whatever its words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from django.db import models


class BounceClass(models.TextChoices):
    HARD = "hard", "Hard: the address does not take mail; it is suppressed"
    SOFT = "soft", "Soft: temporary, or about the message or sender rather than the address"


class BounceReason(models.TextChoices):
    MAILBOX_UNKNOWN = "mailbox_unknown", "The mailbox does not exist"
    MAILBOX_FULL = "mailbox_full", "The mailbox is full"
    MAILBOX_DISABLED = "mailbox_disabled", "The mailbox is disabled or inactive"
    DOMAIN_UNKNOWN = "domain_unknown", "The domain does not exist or takes no mail"
    DNS_FAILURE = "dns_failure", "A DNS lookup for the domain failed"
    POLICY_BLOCK = "policy_block", "Refused by the receiver's policy (sender, authentication)"
    SPAM_BLOCK = "spam_block", "Refused as spam, or the sender is on a block list"
    MESSAGE_TOO_LARGE = "message_too_large", "The message is too large for the receiver"
    RELAY_DENIED = "relay_denied", "The receiving server does not take mail for the address"
    TEMPORARY_FAILURE = "temporary_failure", "A temporary failure: busy, rate-limited, down"
    UNKNOWN = "unknown", "A failure the reply does not explain"


HARD_REASONS = frozenset(
    {
        BounceReason.MAILBOX_UNKNOWN,
        BounceReason.MAILBOX_DISABLED,
        BounceReason.DOMAIN_UNKNOWN,
        BounceReason.RELAY_DENIED,
    }
)
"""Reasons that are about the address: a permanent failure for one of them is hard."""

R = BounceReason

# Enhanced codes that decide alone. "X" stands for either class (4 or 5).
DECIDES: dict[str, BounceReason] = {
    "X.1.1": R.MAILBOX_UNKNOWN,  # bad destination mailbox address
    "5.1.2": R.DOMAIN_UNKNOWN,  # bad destination system address
    "4.1.2": R.DNS_FAILURE,
    "X.1.3": R.MAILBOX_UNKNOWN,  # bad destination mailbox address syntax
    "X.1.6": R.MAILBOX_UNKNOWN,  # mailbox has moved, no forwarding address
    "X.2.2": R.MAILBOX_FULL,
    "X.2.3": R.MESSAGE_TOO_LARGE,  # message length exceeds administrative limit
    "X.3.4": R.MESSAGE_TOO_LARGE,  # message too big for system
    "X.4.2": R.TEMPORARY_FAILURE,  # bad connection
    "X.4.3": R.DNS_FAILURE,  # directory server failure
    "5.4.4": R.DOMAIN_UNKNOWN,  # unable to route
    "4.4.4": R.DNS_FAILURE,
    "X.4.7": R.TEMPORARY_FAILURE,  # delivery time expired
    "X.7.13": R.MAILBOX_DISABLED,  # user account disabled (RFC 3463 registry)
}

# What an enhanced code means when no pattern matches its text: the most specific of
# "5.2.1", "X.2.1", "X.2" that is listed.
DEFAULTS: dict[str, BounceReason] = {
    "X.0": R.UNKNOWN,
    "X.1": R.MAILBOX_UNKNOWN,  # x.1.0 "other address status", x.1.4 ambiguous, ...
    "X.1.10": R.DOMAIN_UNKNOWN,  # RFC 7505 null MX (but see RecipientNotFound below)
    "X.2": R.UNKNOWN,
    "X.2.1": R.MAILBOX_DISABLED,  # Gmail also uses 4.2.1 for "receiving mail too fast"
    "X.3": R.TEMPORARY_FAILURE,  # mail system full, not accepting messages
    "X.4": R.TEMPORARY_FAILURE,  # x.4.1 "no answer from host" (but see AS(201806281))
    "X.5": R.UNKNOWN,  # protocol
    "X.6": R.UNKNOWN,  # content and media (e.g. no SMTPUTF8)
    "X.7": R.POLICY_BLOCK,  # security or policy; the words tell spam apart
}

# (reason, pattern), first match wins: the more specific sit above the general ones
# ("relay access denied" before "denied", "blocked using spamhaus" before "blocked").
PATTERNS: list[tuple[BounceReason, str]] = [
    # About our sender, not the recipient: never a reason to suppress the recipient.
    (R.POLICY_BLOCK, r"sender (address |domain )?(rejected|denied|blocked)"),
    (R.POLICY_BLOCK, r"sender (address |domain )?not (allowed|permitted|authori[sz]ed)"),
    (R.MAILBOX_FULL, r"mailbox (is |was )?full|mail ?box full|mailfolder is full|full mailbox"),
    (R.MAILBOX_FULL, r"over ?quota|quota (exceeded|exceed|full)|exceeded (storage|quota)"),
    (R.MAILBOX_FULL, r"insufficient (disk )?space|mailbox size limit|storage allocation"),
    (R.MAILBOX_FULL, r"QuotaExceeded|out of storage"),
    (R.MESSAGE_TOO_LARGE, r"message (size |length )?(exceeds|is too (large|big))"),
    (R.MESSAGE_TOO_LARGE, r"(message|mail) too (large|big)|size limit|too large|too big"),
    (R.RELAY_DENIED, r"relay(ing)? (access )?(denied|not (permitted|allowed))|unable to relay"),
    (R.RELAY_DENIED, r"(not permitted|not allowed) to relay|we do not relay|relay prohibited"),
    (R.RELAY_DENIED, r"no relaying|relaying (is )?(denied|disabled)|not a gateway"),
    (R.SPAM_BLOCK, r"spam|junk|\bbulk mail|unsolicited|\bUBE\b|phish|virus|malware"),
    (R.SPAM_BLOCK, r"block ?list|black ?list|blocked using|listed (at|in|on|by)|\bRBL\b"),
    (R.SPAM_BLOCK, r"spamhaus|spamcop|barracuda|sorbs|\bDNSBL\b|reputation"),
    (R.SPAM_BLOCK, r"banned sending ip|content (was )?rejected|message content rejected"),
    (R.DNS_FAILURE, r"host not found, try again|try again.*(dns|lookup)|temporary (dns|lookup)"),
    (R.DNS_FAILURE, r"dns (lookup|query|error|failure|timeout)|lookup of mx .* failed"),
    (R.DNS_FAILURE, r"name service error.*try again|servfail"),
    (R.DOMAIN_UNKNOWN, r"domain (name )?(not found|does not exist|unknown)|no such domain"),
    (R.DOMAIN_UNKNOWN, r"host (or domain name )?(not found|unknown)|unroutable|unrouteable"),
    (R.DOMAIN_UNKNOWN, r"nxdomain|null mx|no mx records?\b|domain \S+ does not exist"),
    (R.DOMAIN_UNKNOWN, r"accepts no mail|name service error"),
    (
        R.MAILBOX_DISABLED,
        r"(account|mailbox|user|address) (has been |is |was )?(disabled|inactive)",
    ),
    (R.MAILBOX_DISABLED, r"(account|mailbox) (has been |is |was )?(deactivated|suspended|closed)"),
    (R.MAILBOX_DISABLED, r"(account|mailbox) (has |is |was )?expired"),
    (R.MAILBOX_DISABLED, r"inactive (user|account|mailbox)|no longer (active|in use|valid)"),
    (R.MAILBOX_DISABLED, r"not (an )?active (user|account|mailbox)|(is|has been) disabled"),
    # Exchange Online's directory-based edge blocking: "Recipient address rejected:
    # Access denied. AS(201806281)" (with 5.4.1) is Microsoft's "no such recipient".
    (R.MAILBOX_UNKNOWN, r"AS\(201806281\)"),
    (R.MAILBOX_UNKNOWN, r"user (unknown|not found|does not exist|doesn't exist)|unknown user"),
    (R.MAILBOX_UNKNOWN, r"no such (user|mailbox|recipient|address|account)"),
    (R.MAILBOX_UNKNOWN, r"recipient (unknown|not found|does not exist|invalid)|unknown recipient"),
    (R.MAILBOX_UNKNOWN, r"(mailbox|address|account) (unknown|not found|unavailable)"),
    (R.MAILBOX_UNKNOWN, r"(mailbox|address|account) (does not|doesn't) exist"),
    (R.MAILBOX_UNKNOWN, r"(mailbox|address|account) (couldn't|could not) be found"),
    (R.MAILBOX_UNKNOWN, r"invalid (recipient|mailbox|address)|bad destination mailbox"),
    (R.MAILBOX_UNKNOWN, r"no mailbox here|RecipientNotFound|RecipNotFound|NoSuchUser"),
    (R.MAILBOX_UNKNOWN, r"(does not|doesn't) have an? .{0,40}account"),
    (R.MAILBOX_UNKNOWN, r"(wasn't|was not) found at|unknown local part|not a valid mailbox"),
    (R.MAILBOX_UNKNOWN, r"no such person|mailbox not available|unknown or illegal alias"),
    (R.TEMPORARY_FAILURE, r"try again later|temporar|rate limit|too many|greylist|graylist"),
    (R.TEMPORARY_FAILURE, r"timed? ?out|connection (refused|reset|lost|failed)|deferred"),
    (R.TEMPORARY_FAILURE, r"could not be reached|resources|system storage|retry timeout"),
    (R.TEMPORARY_FAILURE, r"throttl|unusual rate|rate that prevents|receiving mail too"),
    (R.POLICY_BLOCK, r"polic|not authori[sz]ed|access denied|administrative prohibition"),
    (R.POLICY_BLOCK, r"\bDMARC\b|\bSPF\b|\bDKIM\b|authenticat|\bPTR\b|reverse dns|\bTLS\b"),
    (R.POLICY_BLOCK, r"prohibited|refused|denied|rejected|blocked|not permitted|not allowed"),
]
_COMPILED = [(reason, re.compile(pattern, re.IGNORECASE)) for reason, pattern in PATTERNS]
ENHANCED_CODE = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})$")


@dataclass(frozen=True)
class Classification:
    bounce_class: BounceClass
    reason: BounceReason

    @property
    def is_hard(self) -> bool:
        return self.bounce_class == BounceClass.HARD


def reason_in_text(text: str) -> BounceReason | None:
    """The reason the words of a reply give, or None when no pattern matches."""
    for reason, pattern in _COMPILED:
        if pattern.search(text):
            return reason
    return None


def _enhanced_reason(enhanced: str, text: str) -> BounceReason | None:
    match = ENHANCED_CODE.match(enhanced)
    if not match:
        return None
    _, subject, detail = match.groups()
    exact, anyclass = enhanced, f"X.{subject}.{detail}"
    decided = DECIDES.get(exact) or DECIDES.get(anyclass)
    if decided:
        return decided
    return (
        reason_in_text(text)
        or DEFAULTS.get(exact)
        or DEFAULTS.get(anyclass)
        or DEFAULTS.get(f"X.{subject}", R.UNKNOWN)
    )


@lru_cache(maxsize=2048)  # the relay sees the same few replies again and again
def classify(code: int | None, enhanced: str, text: str) -> Classification:
    """Hard or soft, and why, for an SMTP reply or a DSN's status and diagnostic.

    ``code`` is the basic reply code (None when a report gives only a Status),
    ``enhanced`` the RFC 3463 code ("" when none), ``text`` the reply's words. Without
    either code the failure is taken as permanent: it comes from a bounce message.
    """
    reason = _enhanced_reason(enhanced, text) or reason_in_text(text) or R.UNKNOWN
    if code is not None:
        permanent = code >= 500
    elif enhanced:
        permanent = enhanced.startswith("5")
    else:
        permanent = True
    hard = permanent and reason in HARD_REASONS
    return Classification(BounceClass.HARD if hard else BounceClass.SOFT, reason)
