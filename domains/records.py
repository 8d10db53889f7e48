"""The DNS records a tenant publishes for a sending domain."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.utils import timezone

from domains.models import Domain, KeyState

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


def dkim_records(domain: Domain) -> list[DnsRecord]:
    records = []
    for key in domain.listed_keys():
        if key.state == KeyState.RETIRED:
            purpose = (
                f"Old DKIM key {key.selector}: no longer signs. Keep it until "
                f"{key.removable_after:%Y-%m-%d} so mail already sent still verifies, then "
                "remove it."
            )
        elif key.state == KeyState.PENDING:
            purpose = (
                f"New DKIM key ({key.get_algorithm_display()}): publish it now; signing "
                "switches to it once the platform sees it in DNS."
            )
        else:
            purpose = "DKIM: receivers check our signature on your mail against this key."
        records.append(
            DnsRecord(
                host=key.record_name,
                type="TXT",
                value=key.record_value,
                purpose=purpose,
                required=key.state != KeyState.RETIRED,
            )
        )
    return records


def records_for(domain: Domain) -> list[DnsRecord]:
    """Every record for ``domain``: required ones first, then suggestions."""
    name = domain.name
    return [
        *dkim_records(domain),
        DnsRecord(
            host=domain.return_path_host,
            type="CNAME",
            value=settings.SENDMSG_RETURN_PATH_DOMAIN,
            purpose=(
                "Return path: bounces come back to the platform, and SPF passes for a "
                "domain aligned with yours under DMARC."
            ),
            required=True,
        ),
        DnsRecord(
            host=name,
            type="TXT",
            value=f"v=spf1 include:{settings.SENDMSG_SPF_INCLUDE} ~all",
            purpose=(
                "SPF for the root (optional): our mail already passes SPF through the return "
                "path. If you add the include, merge it into your existing SPF record: a "
                "domain must have exactly one."
            ),
            required=False,
        ),
        DnsRecord(
            host=f"_dmarc.{name}",
            type="TXT",
            value=f"v=DMARC1; p=none; rua=mailto:dmarc-reports@{name}",
            purpose=(
                "DMARC to start with: p=none only collects reports. Once they show only "
                "your own mail, move to p=quarantine, then p=reject."
            ),
            required=False,
        ),
        DnsRecord(
            host=f"_smtp._tls.{name}",
            type="TXT",
            value=f"v=TLSRPTv1; rua=mailto:tls-reports@{name}",
            purpose="TLS-RPT (optional): reports of TLS failures when others deliver to you.",
            required=False,
        ),
        DnsRecord(
            host=f"_mta-sts.{name}",
            type="TXT",
            value=f"v=STSv1; id={timezone.now():%Y%m%d}01",
            purpose=(
                "MTA-STS (optional): with a policy file at "
                f"https://mta-sts.{name}/.well-known/mta-sts.txt, mail to you must use TLS. "
                "Publish the record only once the policy file is served."
            ),
            required=False,
        ),
    ]
