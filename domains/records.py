"""The DNS records a tenant publishes for a sending domain."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from domains.models import Domain

TXT_CHUNK = 255  # one DNS character-string holds at most 255 bytes (RFC 1035 §3.3)


@dataclass(frozen=True)
class DnsRecord:
    host: str
    type: str
    value: str
    purpose: str
    required: bool

    def zone_line(self, ttl: int = 3600) -> str:
        """The record as a zone-file line with an absolute name."""
        value = self.value
        if self.type == "TXT":
            value = quote_txt(value)
        elif self.type in {"CNAME", "MX", "NS"}:
            value = value.rstrip(".") + "."
        return f"{self.host.rstrip('.')}.\t{ttl}\tIN\t{self.type}\t{value}"


def quote_txt(value: str) -> str:
    """Quoted character-strings of at most 255 bytes, as DNS providers and zone files need."""
    raw = value.encode("ascii")
    chunks = [raw[i : i + TXT_CHUNK].decode("ascii") for i in range(0, len(raw), TXT_CHUNK)]
    return " ".join('"' + c.replace("\\", "\\\\").replace('"', '\\"') + '"' for c in chunks)


def records_for(domain: Domain) -> list[DnsRecord]:
    records: list[DnsRecord] = []
    key = domain.active_dkim_key()
    if key is not None:
        records.append(
            DnsRecord(
                host=key.record_name,
                type="TXT",
                value=key.record_value,
                purpose="DKIM: receivers check our signature on your mail against this key.",
                required=True,
            )
        )
    records.append(
        DnsRecord(
            host=domain.return_path_host,
            type="CNAME",
            value=settings.SENDMSG_RETURN_PATH_DOMAIN,
            purpose=(
                "Return path: bounces come back to the platform, and SPF passes for a "
                "domain aligned with yours under DMARC."
            ),
            required=True,
        )
    )
    records.append(
        DnsRecord(
            host=domain.name,
            type="TXT",
            value=f"v=spf1 include:{settings.SENDMSG_SPF_INCLUDE} ~all",
            purpose=(
                "SPF for the root (optional): only if you want the platform listed there; "
                "merge it into an existing SPF record rather than adding a second one."
            ),
            required=False,
        )
    )
    records.append(
        DnsRecord(
            host=f"_dmarc.{domain.name}",
            type="TXT",
            value=f"v=DMARC1; p=none; rua=mailto:dmarc-reports@{domain.name}",
            purpose=(
                "DMARC to start with: p=none collects reports; move to p=quarantine, then "
                "p=reject once the reports show only your own mail."
            ),
            required=False,
        )
    )
    return records
