"""SPF and DMARC checks against the real DNS server, each verdict compared with checkdmarc's.

Every zone here is also run through checkdmarc (an independent checker) on the same DNS
server. Where our error/not-error verdict differs from its valid/invalid one, the test says
why and asserts the difference: mostly because we know what checkdmarc cannot (our own
return path and DKIM domain), or because checkdmarc 6 follows RFC 9989 (DMARCbis) where
we follow RFC 7489, which is what receivers run today.
"""

from __future__ import annotations

import contextlib
import ipaddress
import sys
import time
from collections.abc import Iterator
from typing import Any

import checkdmarc.dmarc
import checkdmarc.spf
import checkdmarc.utils
import dns.nameserver
import pytest
from django.conf import settings

from domains.checks import dnsutil
from domains.checks.dmarc import check_dmarc, organizational_domain, parse_dmarc
from domains.checks.results import CheckResult, CheckStatus
from domains.checks.spf import SpfSyntaxError, check_spf, is_spf_record, parse_spf
from sendmsg.resolver import make_resolver
from tests.peers.dns_server import DnsServer

pytestmark = pytest.mark.peers

PLATFORM = settings.SENDMSG_SPF_INCLUDE  # spf.rp.sendmsg.test in the test settings
PLATFORM_SPF = "v=spf1 ip4:127.0.0.1 -all"


# -- fixtures and helpers ------------------------------------------------------------------


@pytest.fixture
def zones(dns_server: DnsServer) -> DnsServer:
    """The session's DNS server, with the platform's SPF include host published.

    Idempotent: adds the line only when the name has no SPF record yet, so other modules
    publishing it too (or this running twice) never makes two records.
    """
    have = dnsutil.txt(dns_server.resolver(), PLATFORM)
    if not any(is_spf_record(t) for t in have):
        dns_server.add_lines("sendmsg.test", [f'{PLATFORM}. IN TXT "{PLATFORM_SPF}"'])
    return dns_server


def spf(dns_server: DnsServer, domain: str, return_path_ok: bool | None = True) -> CheckResult:
    with loopback_only():
        return check_spf(
            domain=domain,
            resolver=dns_server.resolver(),
            platform_include=PLATFORM,
            return_path_ok=return_path_ok,
        )


def dmarc(dns_server: DnsServer, domain: str, *, dkim_domain: str | None = None) -> CheckResult:
    with loopback_only():
        return check_dmarc(
            domain=domain,
            resolver=dns_server.resolver(),
            dkim_domain=dkim_domain or domain,
            return_path_host=f"rp.{domain}",
        )


def theirs_spf(dns_server: DnsServer, domain: str, timeout: float = 2.0) -> dict[str, Any]:
    """checkdmarc's SPF verdict: {"valid": bool, "error": str?, "warnings": [...], ...}."""
    # Its module-level functions, not check_domains(): that one also runs MTA-STS (an HTTPS
    # fetch when a policy is published), BIMI, DNSSEC and SOA checks we do not compare.
    # Passing nameservers (not a resolver) matters: its exp= lookups take only nameservers,
    # and with a resolver alone they would use the system's, off this machine.
    checkdmarc.utils.DNS_CACHE.clear()  # its cache is keyed by name, not by server
    with loopback_only():
        return checkdmarc.spf.check_spf(
            domain, nameservers=_nameservers(dns_server), timeout=timeout, retries=0
        )


def theirs_dmarc(dns_server: DnsServer, domain: str, timeout: float = 2.0) -> dict[str, Any]:
    """checkdmarc's DMARC verdict: {"valid": bool, "error": str?, "warnings": [...], ...}."""
    checkdmarc.utils.DNS_CACHE.clear()
    with loopback_only():
        return dict(
            checkdmarc.dmarc.check_dmarc(
                domain, nameservers=_nameservers(dns_server), timeout=timeout, retries=0
            )
        )


def _nameservers(dns_server: DnsServer) -> list[dns.nameserver.Nameserver]:
    return [dns.nameserver.Do53Nameserver(dns_server.host, port=dns_server.port)]


def assert_result(result: CheckResult, status: CheckStatus, points: float, *fragments: str) -> None:
    assert (result.status, result.points) == (status, points), result
    for fragment in fragments:
        assert fragment in result.message, (fragment, result.message)


# Belt and braces for "network traffic only to loopback": while a check or checkdmarc runs,
# an audit hook records (and blocks) any connection, datagram or name lookup that would
# leave the machine. Audit hooks cannot be removed, so one is added once and switched.
_guard = {"active": False, "installed": False}
_violations: list[str] = []


def _audit(event: str, args: tuple) -> None:
    if not _guard["active"]:
        return
    if event in ("socket.connect", "socket.sendto", "socket.sendmsg"):
        address = args[1]
        host = address[0] if isinstance(address, tuple) else None
    elif event == "socket.getaddrinfo":
        host = args[0]
    else:
        return
    if host is None or host == "localhost":
        return
    if isinstance(host, bytes):
        host = host.decode()
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).is_loopback:
            return
    _violations.append(f"{event} {host}")
    raise PermissionError(f"test tried to reach {host} off the machine")


@contextlib.contextmanager
def loopback_only() -> Iterator[None]:
    if not _guard["installed"]:
        sys.addaudithook(_audit)
        _guard["installed"] = True
    _violations.clear()
    _guard["active"] = True
    try:
        yield
    finally:
        _guard["active"] = False
    assert not _violations, _violations


# -- SPF: parsing (no DNS) -----------------------------------------------------------------


def test_parse_spf_reads_every_mechanism_modifier_and_macro():
    record = parse_spf(
        "v=spf1 a mx/24 a:mail.example.com/24//64 ip4:192.0.2.0/24 ip6:2001:db8::/32 "
        "include:_spf.example.com exists:%{i}._spf.%{d} ?ptr:example.com "
        "exp=explain.%{d} -all include:late.example.com"
    )
    assert [str(t) for t in record.mechanisms] == [
        "a",
        "mx/24",
        "a:mail.example.com/24//64",
        "ip4:192.0.2.0/24",
        "ip6:2001:db8::/32",
        "include:_spf.example.com",
        "exists:%{i}._spf.%{d}",
        "?ptr:example.com",
        "-all",
    ]
    assert record.all == "-" and record.exp == "explain.%{d}"
    # RFC 7208 §5.1: after all, never evaluated
    assert [str(t) for t in record.after_all] == ["include:late.example.com"]
    assert parse_spf("v=spf1 redirect=_spf.example.com").effective_redirect == ("_spf.example.com")
    # §6.1: redirect is ignored when the record has an all mechanism
    assert parse_spf("v=spf1 redirect=x.example.com ~all").effective_redirect is None


@pytest.mark.parametrize(
    ("record", "says"),
    [
        ("v=spf1 ipv4:192.0.2.1 -all", 'write "ip4:192.0.2.1"'),
        ("v=spf1 ip4:192.0.2.0/33 -all", "prefix length /33 must be 0 to 32"),
        ("v=spf1 ip4:2001:db8::1 -all", 'write "ip6:"'),
        ("v=spf1 include -all", 'write "include:example.com"'),
        ("v=spf1 include:localhost -all", "is not a full domain name"),
        ("v=spf1 redirect=a.example redirect=b.example", "keep only one redirect="),
        ("v=spf1 +redirect=a.example", 'write "redirect=a.example"'),
        ("v=spf1 exists:%{q}.example.com -all", "%{q} is not a macro"),
        ("v=spf1 a:%{d0}.example.com -all", "cannot keep 0 labels"),
        ("v=spf1 a:50%.example.com -all", "broken macro"),
        ("v=spf1 all:x", 'write "all"'),
        ("spf1 -all", 'start with "v=spf1"'),
    ],
)
def test_parse_spf_rejects_what_receivers_call_permerror(record: str, says: str):
    with pytest.raises(SpfSyntaxError) as raised:
        parse_spf(record)
    assert says in str(raised.value)


def test_organizational_domain_comes_from_the_bundled_public_suffix_list():
    assert organizational_domain("Mail.Dmarc-Org.test.") == "dmarc-org.test"
    assert organizational_domain("a.b.example.co.uk") == "example.co.uk"
    assert organizational_domain("test") == "test"


# -- SPF against DNS -----------------------------------------------------------------------


def test_spf_all_good(zones):
    zones.set_zone("spf-good.test", [f'@ IN TXT "v=spf1 ip4:192.0.2.0/24 include:{PLATFORM} -all"'])
    result = spf(zones, "spf-good.test", return_path_ok=True)
    assert_result(
        result,
        CheckStatus.OK,
        10,
        "The SPF record at spf-good.test is valid (1 of 10 DNS lookups).",
        f"It includes our servers (spf-good.test -> {PLATFORM}).",
    )
    assert result.details["includes_platform"] is True
    assert (result.details["lookups"], result.details["void_lookups"]) == (1, 0)
    theirs = theirs_spf(zones, "spf-good.test")
    assert theirs["valid"] and theirs["dns_lookups"] == 1


def test_spf_nested_include_reaches_the_platform(zones):
    zones.set_zone(
        "spf-nested.test",
        [
            '@ IN TXT "v=spf1 include:_spf.spf-nested.test ~all"',
            f'_spf IN TXT "v=spf1 ip4:192.0.2.1 include:{PLATFORM} ~all"',
        ],
    )
    result = spf(zones, "spf-nested.test", return_path_ok=False)
    assert_result(
        result,
        CheckStatus.OK,
        10,
        f"includes our servers (spf-nested.test -> _spf.spf-nested.test -> {PLATFORM})",
    )
    assert result.details["lookups"] == 2
    assert result.details["includes"] == [
        "spf-nested.test -> _spf.spf-nested.test",
        f"spf-nested.test -> _spf.spf-nested.test -> {PLATFORM}",
    ]
    assert theirs_spf(zones, "spf-nested.test")["valid"]


def test_spf_redirect_to_the_platform_counts_as_including_it(zones):
    zones.set_zone("spf-redirect.test", [f'@ IN TXT "v=spf1 redirect={PLATFORM}"'])
    result = spf(zones, "spf-redirect.test", return_path_ok=False)
    assert_result(result, CheckStatus.OK, 10, "valid (1 of 10 DNS lookups)", "includes our")
    assert result.details["all"] == "-"  # §6.1: the redirect target's all applies
    assert theirs_spf(zones, "spf-redirect.test")["valid"]


def test_spf_without_the_platform_is_fine_when_the_return_path_aligns(zones):
    zones.set_zone("spf-noinclude.test", ['@ IN TXT "v=spf1 ip4:192.0.2.0/24 -all"'])
    aligned = spf(zones, "spf-noinclude.test", return_path_ok=True)
    assert_result(aligned, CheckStatus.OK, 10, "valid (0 of 10", f"include:{PLATFORM} is optional")
    not_aligned = spf(zones, "spf-noinclude.test", return_path_ok=False)
    assert_result(
        not_aligned,
        CheckStatus.WARNING,
        5,
        "does not include our servers",
        "the return path does not align",
        f"add include:{PLATFORM} before the all term",
    )
    undecided = spf(zones, "spf-noinclude.test", return_path_ok=None)
    assert_result(undecided, CheckStatus.WARNING, 5, "the return path could not be checked")
    # checkdmarc does not know our servers: the record is valid, and that is all it says.
    assert theirs_spf(zones, "spf-noinclude.test")["valid"]


def test_spf_eleven_lookups_is_an_error(zones):
    zones.set_zone(
        "spf-many.test",
        [
            "@ IN A 192.0.2.10",
            "@ IN MX 10 host.spf-many.test.",
            "host IN A 192.0.2.11",
            '@ IN TXT "v=spf1 a include:one.spf-many.test include:two.spf-many.test -all"',
            # 4 lookups each, plus 2 includes and the root's a: 11
            'one IN TXT "v=spf1 a:host.spf-many.test a:host.spf-many.test mx mx -all"',
            f'two IN TXT "v=spf1 a:host.spf-many.test exists:host.spf-many.test '
            f'a:host.spf-many.test include:{PLATFORM} -all"',
        ],
    )
    result = spf(zones, "spf-many.test")
    assert_result(
        result,
        CheckStatus.ERROR,
        0,
        "The SPF record at spf-many.test needs 11 DNS lookups",
        "the limit of 10 and fail SPF (RFC 7208 §4.6.4)",
        "replace a/mx terms with ip4:/ip6: ranges",
    )
    assert result.details["lookups"] == 11
    # The include is there, but a record receivers reject includes nothing.
    assert result.details["includes_platform"] is False
    theirs = theirs_spf(zones, "spf-many.test")
    assert not theirs["valid"] and "10 maximum DNS lookups" in theirs["error"]


def test_spf_two_records_is_an_error(zones):
    zones.set_zone(
        "spf-two.test",
        ['@ IN TXT "v=spf1 ip4:192.0.2.1 -all"', f'@ IN TXT "v=spf1 include:{PLATFORM} -all"'],
    )
    assert_result(
        spf(zones, "spf-two.test"),
        CheckStatus.ERROR,
        0,
        "spf-two.test publishes 2 SPF records",
        "(RFC 7208 §4.5)",
        "merge them into one TXT record at spf-two.test",
    )
    theirs = theirs_spf(zones, "spf-two.test")
    assert not theirs["valid"] and "multiple SPF" in theirs["error"]


def test_spf_include_loop_is_an_error_naming_the_chain(zones):
    zones.set_zone(
        "spf-loop.test",
        [
            '@ IN TXT "v=spf1 include:a.spf-loop.test -all"',
            'a IN TXT "v=spf1 include:b.spf-loop.test -all"',
            'b IN TXT "v=spf1 include:a.spf-loop.test -all"',
        ],
    )
    assert_result(
        spf(zones, "spf-loop.test"),
        CheckStatus.ERROR,
        0,
        "SPF loop: spf-loop.test -> a.spf-loop.test -> b.spf-loop.test -> a.spf-loop.test.",
        "remove include:a.spf-loop.test from the SPF record at b.spf-loop.test",
    )
    theirs = theirs_spf(zones, "spf-loop.test")
    assert not theirs["valid"] and "Include loop" in theirs["error"]


def test_spf_plus_all_is_an_error(zones):
    zones.set_zone("spf-plusall.test", [f'@ IN TXT "v=spf1 include:{PLATFORM} +all"'])
    assert_result(
        spf(zones, "spf-plusall.test"),
        CheckStatus.ERROR,
        0,
        "ends in +all, which lets anyone on the internet send as spf-plusall.test",
        "change +all to -all (or ~all)",
    )
    # We are stricter: +all is valid syntax, so checkdmarc calls the record valid without a
    # word, but it authorizes every host on the internet, which is worse than no SPF.
    theirs = theirs_spf(zones, "spf-plusall.test")
    assert theirs["valid"] and not any("+all" in w for w in theirs["warnings"])


def test_spf_neutral_all_is_a_warning(zones):
    zones.set_zone("spf-neutral.test", [f'@ IN TXT "v=spf1 include:{PLATFORM} ?all"'])
    assert_result(
        spf(zones, "spf-neutral.test"),
        CheckStatus.WARNING,
        5,
        "ends in ?all (neutral)",
        "change ?all to ~all or -all",
    )
    # Not an error on either side (checkdmarc has no opinion on ?all).
    assert theirs_spf(zones, "spf-neutral.test")["valid"]


def test_spf_three_void_lookups_is_an_error(zones):
    zones.set_zone(
        "spf-void.test",
        [
            "@ IN A 192.0.2.1",
            '@ IN TXT "v=spf1 a:nx1.spf-void.test a:nx2.spf-void.test '
            f'mx:nx3.spf-void.test include:{PLATFORM} -all"',
        ],
    )
    result = spf(zones, "spf-void.test")
    assert_result(
        result,
        CheckStatus.ERROR,
        0,
        "makes 3 lookups that find nothing (a:nx1.spf-void.test (at spf-void.test);",
        "receivers allow 2 and then fail SPF (RFC 7208 §4.6.4)",
        "remove the terms that point at names without records",
    )
    assert result.details["void_lookups"] == 3
    theirs = theirs_spf(zones, "spf-void.test")
    assert not theirs["valid"] and "void DNS lookups" in theirs["error"]


def test_spf_include_of_a_name_without_spf_is_an_error(zones):
    zones.set_zone("spf-dangling.test", ['@ IN TXT "v=spf1 include:gone.spf-dangling.test -all"'])
    assert_result(
        spf(zones, "spf-dangling.test"),
        CheckStatus.ERROR,
        0,
        "include:gone.spf-dangling.test in the SPF record at spf-dangling.test points at "
        "gone.spf-dangling.test, which has no SPF record",
        "(RFC 7208 §5.2): fix or remove include:gone.spf-dangling.test",
    )
    theirs = theirs_spf(zones, "spf-dangling.test")
    assert not theirs["valid"] and "has no SPF record" in theirs["error"]


def test_spf_syntax_error_says_what_to_write(zones):
    zones.set_zone("spf-syntax.test", ['@ IN TXT "v=spf1 ipv4:192.0.2.1 -all"'])
    assert_result(
        spf(zones, "spf-syntax.test"),
        CheckStatus.ERROR,
        0,
        'The SPF record at spf-syntax.test is invalid: "ipv4:192.0.2.1" is not an SPF '
        'mechanism (all, include, a, mx, ptr, ip4, ip6, exists): write "ip4:192.0.2.1".',
    )
    assert not theirs_spf(zones, "spf-syntax.test")["valid"]


def test_spf_missing_is_a_warning_with_points_when_the_return_path_aligns(zones):
    zones.set_zone("spf-missing.test", ["@ IN A 192.0.2.1"])
    assert_result(
        spf(zones, "spf-missing.test", return_path_ok=True),
        CheckStatus.WARNING,
        5,
        "spf-missing.test has no SPF record. Mail we send still passes SPF aligned",
        f'publish a TXT record at spf-missing.test: "v=spf1 include:{PLATFORM} ~all"',
    )
    assert_result(
        spf(zones, "spf-missing.test", return_path_ok=False),
        CheckStatus.WARNING,
        0,
        "the return path does not align SPF for our mail either",
    )
    # We differ on purpose: for checkdmarc no SPF is invalid. Our mail passes SPF through
    # rp.<domain>, so what is missing costs deliverability points but breaks nothing.
    theirs = theirs_spf(zones, "spf-missing.test")
    assert not theirs["valid"] and "does not exist" in theirs["error"]


def test_spf_servfail_is_unknown(zones):
    zones.set_zone("spf-servfail.test", [f'@ IN TXT "v=spf1 include:{PLATFORM} -all"'])
    zones.servfail("spf-servfail.test")
    assert_result(
        spf(zones, "spf-servfail.test"),
        CheckStatus.UNKNOWN,
        0,
        "Could not read the SPF record of spf-servfail.test",
        "SERVFAIL",
    )
    # checkdmarc reports a DNS failure as an invalid record; we say we do not know.
    theirs = theirs_spf(zones, "spf-servfail.test")
    assert not theirs["valid"]


def test_spf_servfail_in_a_nested_include_is_unknown(zones):
    zones.set_zone("spf-deep.test", ['@ IN TXT "v=spf1 include:spf.spf-deep-broken.test -all"'])
    zones.set_zone("spf-deep-broken.test", ['spf IN TXT "v=spf1 ip4:192.0.2.1 -all"'])
    zones.servfail("spf-deep-broken.test")
    assert_result(
        spf(zones, "spf-deep.test"),
        CheckStatus.UNKNOWN,
        0,
        "spf.spf-deep-broken.test (TXT) failed",
    )
    # checkdmarc turns the failed include into "no SPF record there": invalid. A receiver
    # would answer temperror and retry, so we report unknown, not a broken record.
    theirs = theirs_spf(zones, "spf-deep.test")
    assert not theirs["valid"] and "spf.spf-deep-broken.test" in theirs["error"]


def test_spf_timeout_is_unknown_within_the_resolver_lifetime(zones):
    zones.drop("spf-timeout.test")
    started = time.monotonic()
    with loopback_only():
        result = check_spf(
            domain="spf-timeout.test",
            resolver=make_resolver(timeout=1),
            platform_include=PLATFORM,
            return_path_ok=True,
        )
    elapsed = time.monotonic() - started
    assert_result(result, CheckStatus.UNKNOWN, 0, "no answer in time")
    assert 0.9 < elapsed < 2.0, elapsed
    # checkdmarc: invalid ("The resolution lifetime expired"); we: unknown.
    assert not theirs_spf(zones, "spf-timeout.test", timeout=0.5)["valid"]


# -- DMARC: parsing (no DNS) ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "says"),
    [
        ("v=DMARC1; p=block", "p=block is not valid: use p=none, p=quarantine or p=reject"),
        ("v=DMARC1; p=none; pct=150", "pct=150 is not valid"),
        ("v=DMARC1; p=none; aspf=x", "aspf=x is not valid: use aspf=r or aspf=s"),
        ("v=DMARC1; p=none; rua=dmarc@example.com", "write rua=mailto:dmarc-reports@"),
        ("v=DMARC1; p=none; p=reject", "The tag p appears twice"),
        ("v=DMARC1; rua=mailto:d@example.com", "The record has no p tag: add p=none"),
        ("p=none; v=DMARC1", 'must start with "v=DMARC1"'),
        ("v=DMARC1; p=none; fo=2", "fo=2 is not valid"),
    ],
)
def test_parse_dmarc_errors_say_what_to_fix(record: str, says: str):
    parsed = parse_dmarc(record)
    assert not parsed.valid
    assert any(says in e for e in parsed.errors), parsed.errors


def test_parse_dmarc_accepts_a_full_record_and_warns_on_unknown_tags():
    parsed = parse_dmarc(
        "v=DMARC1; p=quarantine; sp=reject; pct=50; adkim=s; aspf=r; fo=1:d; "
        "rua=mailto:a@example.com,mailto:b@example.net!10m; ruf=mailto:f@example.com; "
        "ri=86400; rf=afrf; adkm=s;"
    )
    assert parsed.valid, parsed.errors
    assert (parsed.policy, parsed.subdomain_policy, parsed.pct) == ("quarantine", "reject", 50)
    assert (parsed.adkim, parsed.aspf) == ("s", "r")
    assert parsed.warnings == [
        "The tag adkm= is not a DMARC tag and receivers ignore it: check its spelling or remove it."
    ]


# -- DMARC against DNS ---------------------------------------------------------------------


def _dmarc_zone(*txt: str) -> list[str]:
    # An MX so the report address can receive (checkdmarc warns otherwise).
    return ["@ IN MX 10 mx", "mx IN A 192.0.2.25", *(f'_dmarc IN TXT "{t}"' for t in txt)]


def test_dmarc_all_good(zones):
    zones.set_zone(
        "dmarc-good.test",
        _dmarc_zone("v=DMARC1; p=reject; rua=mailto:dmarc-reports@dmarc-good.test"),
    )
    result = dmarc(zones, "dmarc-good.test")
    assert_result(
        result,
        CheckStatus.OK,
        25,
        "The DMARC record at _dmarc.dmarc-good.test is valid with p=reject.",
    )
    assert result.details["alignment"] == {
        "dkim": {"domain": "dmarc-good.test", "mode": "r", "aligned": True},
        "spf": {"domain": "rp.dmarc-good.test", "mode": "r", "aligned": True},
    }
    theirs = theirs_dmarc(zones, "dmarc-good.test")
    assert theirs["valid"] and theirs["tags"]["p"]["value"] == "reject"


def test_dmarc_missing_is_an_error_that_gives_the_record_to_start_with(zones):
    zones.set_zone("dmarc-missing.test", ["@ IN A 192.0.2.1"])
    assert_result(
        dmarc(zones, "dmarc-missing.test"),
        CheckStatus.ERROR,
        0,
        "No DMARC record at _dmarc.dmarc-missing.test.",
        "Gmail and Yahoo require one",
        'publish a TXT record at _dmarc.dmarc-missing.test: "v=DMARC1; p=none; '
        'rua=mailto:dmarc-reports@dmarc-missing.test"',
    )
    assert not theirs_dmarc(zones, "dmarc-missing.test")["valid"]


def test_dmarc_invalid_policy_is_an_error(zones):
    zones.set_zone(
        "dmarc-badp.test",
        _dmarc_zone("v=DMARC1; p=block; rua=mailto:dmarc-reports@dmarc-badp.test"),
    )
    assert_result(
        dmarc(zones, "dmarc-badp.test"),
        CheckStatus.ERROR,
        0,
        "The DMARC record at _dmarc.dmarc-badp.test is invalid: p=block is not valid: use "
        "p=none, p=quarantine or p=reject.",
    )
    theirs = theirs_dmarc(zones, "dmarc-badp.test")
    assert not theirs["valid"] and "not block" in theirs["error"]


def test_dmarc_invalid_pct_is_an_error_where_checkdmarc_only_warns(zones):
    zones.set_zone(
        "dmarc-badpct.test",
        _dmarc_zone("v=DMARC1; p=quarantine; pct=150; rua=mailto:dmarc-reports@dmarc-badpct.test"),
    )
    assert_result(
        dmarc(zones, "dmarc-badpct.test"),
        CheckStatus.ERROR,
        0,
        "pct=150 is not valid",
        "use pct=100 or remove the tag",
    )
    # We differ on purpose: checkdmarc 6 follows RFC 9989 (DMARCbis), which dropped pct, so
    # it only warns. Receivers implementing RFC 7489 read pct as 0-100 (§6.3) and may
    # discard the record or the tag; either way the tenant should fix it.
    theirs = theirs_dmarc(zones, "dmarc-badpct.test")
    assert theirs["valid"] and any("pct tag was removed" in w for w in theirs["warnings"])


def test_dmarc_without_p_is_an_error_where_checkdmarc_only_warns(zones):
    zones.set_zone(
        "dmarc-nop.test", _dmarc_zone("v=DMARC1; rua=mailto:dmarc-reports@dmarc-nop.test")
    )
    assert_result(
        dmarc(zones, "dmarc-nop.test"), CheckStatus.ERROR, 0, "The record has no p tag: add p=none"
    )
    # RFC 7489 §6.3 requires p; RFC 9989 (checkdmarc 6) reads a missing p as p=none.
    theirs = theirs_dmarc(zones, "dmarc-nop.test")
    assert theirs["valid"] and any("missing p tag" in w for w in theirs["warnings"])


def test_dmarc_two_records_is_an_error(zones):
    zones.set_zone(
        "dmarc-two.test",
        _dmarc_zone("v=DMARC1; p=none", "v=DMARC1; p=reject; rua=mailto:d@dmarc-two.test"),
    )
    assert_result(
        dmarc(zones, "dmarc-two.test"),
        CheckStatus.ERROR,
        0,
        "_dmarc.dmarc-two.test has 2 DMARC records, so receivers apply none of them",
        "keep exactly one TXT record starting v=DMARC1 at _dmarc.dmarc-two.test",
    )
    theirs = theirs_dmarc(zones, "dmarc-two.test")
    assert not theirs["valid"] and "Multiple DMARC" in theirs["error"]


def test_dmarc_strict_spf_alignment_is_a_warning_because_dkim_still_aligns(zones):
    zones.set_zone(
        "dmarc-strict.test",
        _dmarc_zone("v=DMARC1; p=reject; aspf=s; rua=mailto:dmarc-reports@dmarc-strict.test"),
    )
    result = dmarc(zones, "dmarc-strict.test")
    assert_result(
        result,
        CheckStatus.WARNING,
        25,  # the policy is as strong as it gets; only SPF alignment is lost
        "aspf=s asks for strict SPF alignment, and our return path rp.dmarc-strict.test is "
        "not dmarc-strict.test itself, so SPF does not align",
        "it still passes DMARC through our DKIM signature (d=dmarc-strict.test)",
        "change aspf=s to aspf=r (or remove it) in the TXT record at _dmarc.dmarc-strict.test",
    )
    assert result.details["alignment"]["spf"]["aligned"] is False
    assert result.details["alignment"]["dkim"]["aligned"] is True
    # checkdmarc has no notion of our return path: the record is simply valid.
    assert theirs_dmarc(zones, "dmarc-strict.test")["valid"]


def test_dmarc_nothing_aligned_is_an_error(zones):
    # Signing with the parent domain while the From is a subdomain, both strict.
    zones.set_zone(
        "dmarc-noalign.test",
        [
            *_dmarc_zone("v=DMARC1; p=reject; rua=mailto:d@dmarc-noalign.test"),
            "news IN MX 10 mx.dmarc-noalign.test.",
            '_dmarc.news IN TXT "v=DMARC1; p=reject; adkim=s; aspf=s; '
            'rua=mailto:d@news.dmarc-noalign.test"',
        ],
    )
    assert_result(
        dmarc(zones, "news.dmarc-noalign.test", dkim_domain="dmarc-noalign.test"),
        CheckStatus.ERROR,
        0,
        "Mail we send as news.dmarc-noalign.test fails DMARC: neither our DKIM signature "
        "(d=dmarc-noalign.test, adkim=s) nor our return path (rp.news.dmarc-noalign.test, "
        "aspf=s) aligns",
        "Change adkim=s to adkim=r and aspf=s to aspf=r",
    )
    # We differ on purpose: the record itself is valid (checkdmarc), but it fails the mail
    # we send, which only we can tell.
    assert theirs_dmarc(zones, "news.dmarc-noalign.test")["valid"]


def test_dmarc_p_none_is_explained_as_monitoring_only(zones):
    zones.set_zone(
        "dmarc-none.test",
        _dmarc_zone("v=DMARC1; p=none; rua=mailto:dmarc-reports@dmarc-none.test"),
    )
    assert_result(
        dmarc(zones, "dmarc-none.test"),
        CheckStatus.WARNING,
        10,
        "p=none is monitoring only: receivers deliver mail that fails DMARC as usual",
        "change it to p=quarantine, then p=reject, in the TXT record at _dmarc.dmarc-none.test",
    )
    theirs = theirs_dmarc(zones, "dmarc-none.test")
    assert theirs["valid"] and any("p tag value of none" in w for w in theirs["warnings"])


def test_dmarc_pct_below_100_is_noted_and_scaled(zones):
    zones.set_zone(
        "dmarc-pct.test",
        _dmarc_zone("v=DMARC1; p=quarantine; pct=50; rua=mailto:dmarc-reports@dmarc-pct.test"),
    )
    assert_result(
        dmarc(zones, "dmarc-pct.test"),
        CheckStatus.WARNING,
        14.5,  # 10 + half of quarantine's 9; the other half falls back to none (§6.6.4)
        "valid with p=quarantine on 50% of failing mail",
        "pct=50: receivers apply p=quarantine to only 50% of failing mail and treat the "
        "rest as none. Raise it to pct=100",
    )
    assert theirs_dmarc(zones, "dmarc-pct.test")["valid"]


def test_dmarc_subdomain_falls_back_to_the_organizational_domain(zones):
    zones.set_zone(
        "dmarc-org.test",
        [
            *_dmarc_zone(
                "v=DMARC1; p=reject; sp=quarantine; rua=mailto:dmarc-reports@dmarc-org.test"
            ),
            "mail IN A 192.0.2.1",
        ],
    )
    result = dmarc(zones, "mail.dmarc-org.test")
    assert_result(
        result,
        CheckStatus.OK,
        19,  # quarantine
        "The DMARC record at _dmarc.dmarc-org.test (inherited from the organizational "
        "domain) is valid with sp=quarantine.",
        "consider sp=reject",
    )
    assert result.details["inherited"] is True and result.details["policy"] == "quarantine"
    # checkdmarc 6 walks up the DNS tree (RFC 9989 §4.10) instead of using the public
    # suffix list (RFC 7489 §6.6.3); for this name both land on the same record.
    theirs = theirs_dmarc(zones, "mail.dmarc-org.test")
    assert theirs["valid"] and theirs["location"] == "dmarc-org.test"


def test_dmarc_servfail_is_unknown(zones):
    zones.set_zone("dmarc-servfail.test", _dmarc_zone("v=DMARC1; p=reject"))
    zones.servfail("dmarc-servfail.test")
    assert_result(
        dmarc(zones, "dmarc-servfail.test"),
        CheckStatus.UNKNOWN,
        0,
        "Could not read the DMARC record of dmarc-servfail.test",
        "SERVFAIL",
    )
    # checkdmarc: invalid (the DNS error as its message); we: unknown, try again.
    assert not theirs_dmarc(zones, "dmarc-servfail.test")["valid"]


def test_dmarc_timeout_is_unknown_within_the_resolver_lifetime(zones):
    zones.set_zone("dmarc-timeout.test", _dmarc_zone("v=DMARC1; p=reject"))
    zones.drop("_dmarc.dmarc-timeout.test")
    started = time.monotonic()
    with loopback_only():
        result = check_dmarc(
            domain="dmarc-timeout.test",
            resolver=make_resolver(timeout=1),
            dkim_domain="dmarc-timeout.test",
            return_path_host="rp.dmarc-timeout.test",
        )
    elapsed = time.monotonic() - started
    assert_result(result, CheckStatus.UNKNOWN, 0, "no answer in time")
    assert 0.9 < elapsed < 2.0, elapsed
    assert not theirs_dmarc(zones, "dmarc-timeout.test", timeout=0.5)["valid"]
