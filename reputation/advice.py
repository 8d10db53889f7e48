"""What each reputation level means to a tenant, in plain words: what it does to their
sending and what to do about it.

Kept as data beside the levels (our own words for our own concept), so every place
that tells a tenant about a level says the same thing. The effects are read from the
settings the gate enforces (reputation/gate.py), never restated as numbers here.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from reputation.models import Level

WHAT_TO_DO: dict[int, str] = {
    Level.EXCELLENT: (
        "Nothing to fix. Keep sending only to people who asked for your mail; sendmsg "
        "already stops sending to addresses that bounce for good or complain."
    ),
    Level.GOOD: (
        "Nothing urgent. Keep an eye on the rates below: remove addresses that bounce and "
        "make unsubscribing easy, so they come back under the level 1 limits."
    ),
    Level.WATCH: (
        "Check your lists: remove addresses that bounce, stop mailing old, bought or "
        "scraped lists, send only to people who opted in, and put an unsubscribe link in "
        "every bulk message."
    ),
    Level.RESTRICTED: (
        "Mail already queued goes out at this level's rate too. Pause campaigns to old "
        "or unconfirmed lists now and send only mail people expect "
        "(receipts, password resets, subscriptions they confirmed). Find which list or "
        "import the bounces and complaints below come from, remove those addresses, and "
        "ask for consent again before mailing the rest."
    ),
    Level.SUSPENDED: (
        "Sending is suspended: new mail is refused (SMTP 550 5.7.1, API 403) and mail "
        "already queued is held until the suspension is lifted. Find the "
        "source of the bounces or complaints listed below and clean that list, then contact "
        "the operator of this platform to review your account and lift the suspension."
    ),
}

ENTRY: dict[int, str] = {
    Level.SUSPENDED: "Above level 4's limits, or set by an operator.",
}


def effect(level: int) -> str:
    """What the level does to new mail, from the rate factors the gate applies."""
    if level >= Level.SUSPENDED:
        return "New mail is refused; queued mail is held."
    factor = settings.SENDMSG_LEVEL_RATE_FACTORS[level - 1]
    if factor >= 1:
        return "Full plan rate."
    if factor == 0.5:
        return "Half the plan rate."
    if factor == 0.1:
        return "A tenth of the plan rate."
    return f"{factor:.0%} of the plan rate."


def sample_sizes() -> dict[str, str]:
    """The minimum samples before a rate counts, for the words that explain them."""
    return {
        "window_days": str(settings.SENDMSG_REPUTATION_WINDOW_DAYS),
        "bounce_sample": f"{settings.SENDMSG_REPUTATION_BOUNCE_SAMPLE:,}",
        "complaint_sample": f"{settings.SENDMSG_REPUTATION_COMPLAINT_SAMPLE:,}",
        "complaint_min": f"{settings.SENDMSG_REPUTATION_COMPLAINT_MIN:,}",
    }


def percent(limit: float) -> str:
    """A threshold from the settings (already in percent) as people write it: 2%, 0.05%."""
    return f"{limit:g}%"


@dataclass(frozen=True)
class LevelRow:
    """One row of the table that explains the five levels."""

    number: int
    name: str
    enter_when: str
    effect: str


def level_table() -> list[LevelRow]:
    """The five levels with the thresholds as configured (the empty state explains them)."""
    limits = zip(
        settings.SENDMSG_LEVEL_BOUNCE_LIMITS, settings.SENDMSG_LEVEL_COMPLAINT_LIMITS, strict=True
    )
    rows = [
        LevelRow(
            number=number,
            name=Level(number).label,
            enter_when=(
                f"Hard bounces under {percent(bounce)} and complaints under {percent(complaint)}."
            ),
            effect=effect(number),
        )
        for number, (bounce, complaint) in enumerate(limits, start=1)
    ]
    rows.append(
        LevelRow(
            number=Level.SUSPENDED,
            name=Level.SUSPENDED.label,
            enter_when=ENTRY[Level.SUSPENDED],
            effect=effect(Level.SUSPENDED),
        )
    )
    return rows
