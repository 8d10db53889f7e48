"""SMTP replies as values: what a remote server said, and what we say."""

from __future__ import annotations

import re
from dataclasses import dataclass

ENHANCED = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})\s+")


@dataclass(frozen=True)
class SmtpReply:
    code: int
    enhanced: str
    text: str

    @classmethod
    def parse(cls, code: int, message: bytes | str) -> SmtpReply:
        """Split a reply's text into its RFC 3463 enhanced code (if any) and the rest."""
        text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
        text = " ".join(text.split())
        match = ENHANCED.match(text)
        if match:
            return cls(code, match.group(1), text[match.end() :])
        return cls(code, "", text)

    @property
    def is_success(self) -> bool:
        return 200 <= self.code < 300

    @property
    def is_permanent(self) -> bool:
        return 500 <= self.code < 600

    def __str__(self) -> str:
        return " ".join(part for part in (str(self.code), self.enhanced, self.text) if part)
