"""The public deliverability check (page and API) against the real DNS server: no login,
right verdicts, nothing written, bad input refused, a limit per client address."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime

import pytest
import time_machine
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from django.apps import apps
from django.core.cache import cache
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from domains.models import Domain
from domains.public_check import COMMON_SELECTORS, audit_domain

pytestmark = pytest.mark.django_db

API = "/api/v1/public/check/"
PAGE = "/check/"


def rsa_record(bits: int = 2048) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    der = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"


def ed25519_record() -> str:
    raw = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    return f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode()}"


def good_zone(name: str, *extra: str) -> list[str]:
    """Everything a well-run sending domain publishes, DKIM left to ``extra``."""
    return [
        f'{name}. IN TXT "v=spf1 ip4:192.0.2.0/24 -all"',
        f"{name}. IN MX 10 mx.{name}.",
        f"mx.{name}. IN A 192.0.2.25",
        f'_dmarc.{name}. IN TXT "v=DMARC1; p=reject; rua=mailto:dmarc@{name}"',
        f'_mta-sts.{name}. IN TXT "v=STSv1; id=20240101"',
        f'_smtp._tls.{name}. IN TXT "v=TLSRPTv1; rua=mailto:tls@{name}"',
        *extra,
    ]


@pytest.fixture(autouse=True)
def fresh_limits():
    """Each test starts with no checks counted against any address."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture(scope="module")
def zones(dns_server):
    dns_server.set_zone(
        "pub-good.test",
        good_zone("pub-good.test", f'mail2024._domainkey.pub-good.test. IN TXT "{rsa_record()}"'),
    )
    dns_server.set_zone(
        "pub-common.test",
        good_zone(
            "pub-common.test",
            f'google._domainkey.pub-common.test. IN TXT "{rsa_record()}"',
            f'k1._domainkey.pub-common.test. IN TXT "{ed25519_record()}"',
        ),
    )
    dns_server.set_zone(
        "pub-weak.test",
        good_zone("pub-weak.test", f'old._domainkey.pub-weak.test. IN TXT "{rsa_record(1024)}"'),
    )
    dns_server.set_zone("pub-bare.test", ["pub-bare.test. IN A 192.0.2.1"])
    # pub-partial.test answers, but its DMARC and DKIM names answer SERVFAIL.
    dns_server.set_zone("pub-partial.test", good_zone("pub-partial.test"))
    for child in ("_dmarc.pub-partial.test", "_domainkey.pub-partial.test"):
        dns_server.set_zone(child, [f'{child}. IN TXT "placeholder"'])
        dns_server.servfail(child)
    return dns_server


def statuses(body: dict) -> dict[str, str]:
    return {r["name"]: r["status"] for r in body["results"]}


def result(body: dict, name: str) -> dict:
    return next(r for r in body["results"] if r["name"] == name)


# -- no login, right verdicts ---------------------------------------------------------------


def test_api_checks_a_domain_never_seen_without_a_key(zones):
    response = APIClient().get(API, {"domain": "PUB-GOOD.test.", "selector": "mail2024"})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["domain"] == "pub-good.test"
    assert statuses(body) == {
        "dkim": "ok",
        "spf": "ok",
        "dmarc": "ok",
        "mx": "ok",
        "mta_sts": "ok",
        "tls_rpt": "ok",
        "bimi": "ok",
    }, [(r["name"], r["message"]) for r in body["results"]]
    assert body["score"] == 100 and body["partial"] is False
    assert {r["name"] for r in body["results"]} == set(statuses(body))
    assert "return_path" not in statuses(body)
    # Weights are this check's shares of 100 points; full marks add up to the score.
    assert sum(r["weight"] for r in body["results"]) == pytest.approx(100, abs=0.5)
    assert sum(r["points"] for r in body["results"]) == pytest.approx(100, abs=0.5)
    dkim = result(body, "dkim")
    assert body["selectors"] == ["mail2024"] and body["common_selectors"] is False
    [found] = dkim["details"]["selectors"]
    assert (found["selector"], found["key_type"], found["bits"]) == ("mail2024", "rsa", 2048)
    assert "RSA 2048-bit" in dkim["message"]
    # Nothing about this platform's include or return path for someone else's domain.
    spf = result(body, "spf")
    assert "our" not in spf["message"].split() and "return path" not in spf["message"]
    assert "includes_platform" not in spf["details"]
    assert not Domain.objects.filter(name="pub-good.test").exists()


def test_page_checks_a_domain_without_login(zones):
    response = Client().get(PAGE, {"domain": "pub-good.test", "selector": "mail2024"})
    assert response.status_code == 200
    html = response.content.decode()
    assert "Results for pub-good.test" in html
    assert re.search(r'id="check-score"><strong>100</strong> of 100', html)
    # Status in words, not colour alone.
    assert re.search(r'data-check="dkim" data-status="ok">.*?OK</span>', html, re.S)
    assert "RSA 2048-bit" in html and "partial" not in html


def test_page_without_a_domain_shows_the_form(zones):
    response = Client().get(PAGE)
    assert response.status_code == 200
    html = response.content.decode()
    assert 'name="domain"' in html and 'name="selector"' in html
    assert "Results for" not in html


def test_bare_domain_gets_the_fixes(zones):
    body = APIClient().get(API, {"domain": "pub-bare.test"}).json()
    assert statuses(body) == {
        "dkim": "warning",
        "spf": "warning",
        "dmarc": "error",
        "mx": "warning",
        "mta_sts": "warning",
        "tls_rpt": "warning",
        "bimi": "ok",
    }
    assert body["partial"] is False
    assert body["score"] == round(100 * 5 / 85)  # only MX's half points (5 of 10)
    dkim = result(body, "dkim")
    assert body["common_selectors"] is True
    assert body["selectors_tried"] == list(COMMON_SELECTORS)
    assert "s= tag of the DKIM-Signature header" in dkim["message"]
    assert dkim["details"]["found"] == []
    spf = result(body, "spf")
    assert "no SPF record" in spf["message"] and "v=spf1" in spf["message"]
    assert "return path" not in spf["message"] and spf["points"] == 0
    assert "_dmarc.pub-bare.test" in result(body, "dmarc")["message"]


# -- DKIM at given and at common selectors ----------------------------------------------


def test_dkim_found_at_common_selectors(zones):
    report = audit_domain(name="pub-common.test")
    dkim = report.result("dkim")
    assert str(dkim.status) == "ok", dkim.message
    assert dkim.details["found"] == ["google", "k1"]
    found = {s["selector"]: (s["key_type"], s["bits"]) for s in report.dkim_selectors if s["found"]}
    assert found == {"google": ("rsa", 2048), "k1": ("ed25519", 256)}
    assert report.score == 100


def test_dkim_at_a_given_selector_that_is_not_there(zones):
    body = APIClient().get(API, {"domain": "pub-common.test", "selector": "nope"}).json()
    dkim = result(body, "dkim")
    assert dkim["status"] == "error"
    assert "No DKIM record at nope._domainkey.pub-common.test" in dkim["message"]
    assert "s= tag" in dkim["message"]


def test_several_selectors_in_one_field_and_repeated(zones):
    response = APIClient().get(
        f"{API}?domain=pub-common.test&selector=google,%20nope&selector=k1&selector=google"
    )
    body = response.json()
    assert body["selectors"] == ["google", "nope", "k1"]
    dkim = result(body, "dkim")
    # Two keys work, but a selector asked for has none: worth a warning, not a failure.
    assert dkim["status"] == "warning" and "nope._domainkey" in dkim["message"]


def test_weak_dkim_key_is_a_warning_with_half_points(zones):
    report = audit_domain(name="pub-weak.test", selectors=["old"])
    dkim = report.result("dkim")
    assert str(dkim.status) == "warning" and dkim.points == 15
    assert "RSA 1024-bit" in dkim.message and "2048" in dkim.message


# -- nothing written -------------------------------------------------------------------------


def _counts() -> dict[str, int]:
    return {
        model._meta.label: model.objects.count()
        for label in ("domains", "delivery", "reputation")
        for model in apps.get_app_config(label).get_models()
    }


def test_nothing_is_written(zones, verified_domain):
    before = _counts()
    assert before["domains.Domain"] == 1  # a tenant's domain exists; it must stay untouched
    with CaptureQueriesContext(connection) as queries:
        # A tenant's own domain and strangers' ones, through both doors.
        assert APIClient().get(API, {"domain": "acme.test"}).status_code == 200
        assert APIClient().get(API, {"domain": "pub-bare.test"}).status_code == 200
        assert Client().get(PAGE, {"domain": "pub-common.test"}).status_code == 200
        assert Client().get(PAGE, {"domain": "acme.test"}).status_code == 200
    assert _counts() == before
    writes = [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE", "REPLACE"))
    ]
    assert writes == []
    verified_domain.refresh_from_db()
    assert verified_domain.checks.count() == 1  # only the fixture's own check


# -- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["no-dot", "bad..dots.test", "x" * 300 + ".test", "127.0.0.1"])
def test_bad_domain_is_400_from_the_api(zones, name):
    response = APIClient().get(API, {"domain": name})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["field"] == "domain" and error["code"] == "invalid_request"
    assert name[:20] in error["message"] or "IP address" in error["message"]


@pytest.mark.parametrize("query", [{}, {"domain": ""}, {"domain": "  "}])
def test_missing_domain_is_400_from_the_api(zones, query):
    response = APIClient().get(API, query)
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "domain"


def test_private_names_are_refused(zones):
    response = APIClient().get(API, {"domain": "printer.local"})
    error = response.json()["error"]
    assert response.status_code == 400 and "private name" in error["message"]


@pytest.mark.parametrize(
    "selector", ["bad selector!", "a,b,c,d,e,f", "under_score", "-dash"], ids=str
)
def test_bad_selectors_are_400(zones, selector):
    response = APIClient().get(API, {"domain": "pub-good.test", "selector": selector})
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "selector"


def test_selector_too_long_for_the_domain_is_400(zones):
    domain = ("a" * 60 + ".") * 3 + "pub.test"
    response = APIClient().get(API, {"domain": domain, "selector": "s" * 60})
    assert response.status_code == 400
    assert "longer than DNS allows" in response.json()["error"]["message"]
    page = Client().get(PAGE, {"domain": domain, "selector": "s" * 60})
    assert page.status_code == 400 and 'id="check-selector-error"' in page.content.decode()


def test_bad_domain_shows_an_error_on_the_page(zones):
    response = Client().get(PAGE, {"domain": "bad..dots.test"})
    assert response.status_code == 400
    html = response.content.decode()
    assert 'id="check-domain-error" role="alert"' in html
    assert "is not a valid domain name" in html and 'aria-invalid="true"' in html
    assert "Results for" not in html


# -- the limit per client address --------------------------------------------------------


def test_past_the_limit_answers_429_with_retry_after(zones, settings):
    settings.SENDMSG_PUBLIC_CHECK_PER_MINUTE = 2
    api, page = APIClient(REMOTE_ADDR="198.51.100.7"), Client(REMOTE_ADDR="198.51.100.7")
    # Five seconds into a minute, with the clock running: the window cannot roll over.
    with time_machine.travel(datetime(2030, 1, 1, 12, 0, 5, tzinfo=UTC), tick=True):
        assert api.get(API, {"domain": "pub-bare.test"}).status_code == 200
        assert page.get(PAGE, {"domain": "pub-bare.test"}).status_code == 200
        limited = api.get(API, {"domain": "pub-bare.test"})
        assert limited.status_code == 429
        assert 1 <= int(limited["Retry-After"]) <= 60
        assert limited.json()["error"]["code"] == "rate_limited"
        assert "2 a minute" in limited.json()["error"]["message"]
        # The page and the API share the count.
        page_limited = page.get(PAGE, {"domain": "pub-bare.test"})
        assert page_limited.status_code == 429 and page_limited["Retry-After"]
        assert "Too many checks" in page_limited.content.decode()
        # Showing the form costs nothing, and other addresses are not held back.
        assert page.get(PAGE).status_code == 200
        other = APIClient(REMOTE_ADDR="203.0.113.9")
        assert other.get(API, {"domain": "pub-bare.test"}).status_code == 200
    # The next minute starts a new count.
    with time_machine.travel(datetime(2030, 1, 1, 12, 1, 1, tzinfo=UTC), tick=True):
        assert api.get(API, {"domain": "pub-bare.test"}).status_code == 200


def test_ipv6_clients_share_a_limit_per_64(zones, settings):
    settings.SENDMSG_PUBLIC_CHECK_PER_MINUTE = 1
    with time_machine.travel(datetime(2030, 1, 1, 12, 0, 5, tzinfo=UTC), tick=True):
        first = APIClient(REMOTE_ADDR="2001:db8:1:2::1")
        second = APIClient(REMOTE_ADDR="2001:db8:1:2:ffff::9")
        elsewhere = APIClient(REMOTE_ADDR="2001:db8:1:3::1")
        assert first.get(API, {"domain": "pub-bare.test"}).status_code == 200
        assert second.get(API, {"domain": "pub-bare.test"}).status_code == 429
        assert elsewhere.get(API, {"domain": "pub-bare.test"}).status_code == 200


# -- DNS failures ------------------------------------------------------------------------------


def test_servfail_is_unknown_and_the_score_partial(zones):
    response = APIClient().get(API, {"domain": "pub-partial.test"})
    body = response.json()
    assert statuses(body)["dmarc"] == "unknown" and statuses(body)["dkim"] == "unknown"
    assert statuses(body)["spf"] == "ok" and statuses(body)["mx"] == "ok"
    assert body["partial"] is True
    # Unknown checks neither add nor remove: the rest are all good.
    assert body["score"] == 100
    assert result(body, "dmarc")["points"] == 0

    html = Client().get(PAGE, {"domain": "pub-partial.test"}).content.decode()
    assert "<strong>partial</strong>" in html
    assert re.search(r'data-check="dmarc" data-status="unknown">.*?Unknown</span>', html, re.S)
    assert "not counted" in html


def test_all_servfail_has_no_score(zones, dns_server):
    dns_server.set_zone("pub-dead.test", ["pub-dead.test. IN A 192.0.2.1"])
    dns_server.servfail("pub-dead.test")
    report = audit_domain(name="pub-dead.test")
    assert {str(r.status) for r in report.results} == {"unknown"}
    assert report.partial and report.score is None
    assert report.as_dict()["score"] is None


def test_a_name_that_never_answers_is_unknown_in_bounded_time(zones, dns_server):
    import time

    dns_server.set_zone("pub-slow.test", good_zone("pub-slow.test"))
    dns_server.drop("_mta-sts.pub-slow.test")
    try:
        started = time.monotonic()
        report = audit_domain(name="pub-slow.test", selectors=["x"], timeout=1)
        elapsed = time.monotonic() - started
    finally:
        dns_server.clear_override("_mta-sts.pub-slow.test")
    assert str(report.result("mta_sts").status) == "unknown"
    assert str(report.result("spf").status) == "ok" and report.partial
    assert elapsed < 3.5
