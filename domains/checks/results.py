"""What a DNS check says: a status, a message that says what to change, and points."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db import models


class CheckStatus(models.TextChoices):
    OK = "ok", "OK"
    WARNING = "warning", "Warning"
    ERROR = "error", "Error"
    UNKNOWN = "unknown", "Unknown (DNS did not answer; try again)"


# Shares of the 100-point health score: what receivers enforce comes first.
WEIGHTS = {
    "dkim": 30,
    "return_path": 15,
    "spf": 10,
    "dmarc": 25,
    "mx": 10,
    "mta_sts": 5,
    "tls_rpt": 5,
    "bimi": 0,
}


@dataclass(frozen=True)
class CheckResult:
    """One check's verdict.

    ``points`` is what the check earned of ``WEIGHTS[name]``; an UNKNOWN result earns
    nothing and is left out of the score (which then says it is partial). ``details``
    holds parsed facts (tags, lookup counts) for the dashboard and API.
    """

    name: str
    status: CheckStatus
    message: str
    points: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def weight(self) -> int:
        return WEIGHTS[self.name]

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": str(self.status),
            "message": self.message,
            "points": self.points,
            "weight": self.weight,
            "details": self.details,
        }


def is_partial(results: list[CheckResult]) -> bool:
    """Whether some check got no DNS answer (its verdict is unknown)."""
    return any(r.status == CheckStatus.UNKNOWN for r in results)


def score_of(results: list[CheckResult], weights: dict[str, int] = WEIGHTS) -> int | None:
    """0–100 over the checks that got an answer: unknown ones neither add nor remove.

    None when no check got an answer at all.
    """
    known = [r for r in results if r.status != CheckStatus.UNKNOWN]
    weight = sum(weights[r.name] for r in known)
    return round(100 * sum(r.points for r in known) / weight) if weight else None


def ok(name: str, message: str, *, points: float | None = None, **details: Any) -> CheckResult:
    """A passing result; full points unless given."""
    earned = WEIGHTS[name] if points is None else points
    return CheckResult(name, CheckStatus.OK, message, earned, details)


def warning(name: str, message: str, *, points: float = 0.0, **details: Any) -> CheckResult:
    return CheckResult(name, CheckStatus.WARNING, message, points, details)


def error(name: str, message: str, **details: Any) -> CheckResult:
    return CheckResult(name, CheckStatus.ERROR, message, 0.0, details)


def unknown(name: str, message: str, **details: Any) -> CheckResult:
    return CheckResult(name, CheckStatus.UNKNOWN, message, 0.0, details)
