"""TLS policy of the relay, against real peers found through the real DNS server: MTA-STS
(RFC 8461) policies served over HTTPS by a real web server with a test CA's certificate,
and real SMTP receivers with and without STARTTLS, with right and wrong certificates; and
the sending domain's own "require TLS" setting.

MX hosts (zone mx.test, A records to loopback addresses, all on the relay port):
plain.mx.test offers no STARTTLS, good.mx.test has a certificate for its name,
wrongcert.mx.test one for another name; rogue.elsewhere.test has a valid certificate but
is outside every policy's ``*.mx.test``. Each test uses its own destination domain, as
policies stay in the (per test session) cache.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from types import SimpleNamespace

import pytest
import time_machine
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from delivery.accept import Sender, accept_message
from delivery.credentials import create_api_key
from delivery.models import Event, Message, Recipient, Source
from delivery.mta_sts import (
    MAX_POLICY_BYTES,
    POLICY_PATH,
    Mode,
    PolicyError,
    StsPolicy,
    parse_policy,
    parse_record,
)
from delivery.mx import flush_cache
from delivery.relay import deliver_message
from tests.peers.https_server import HttpsServer
from tests.peers.smtp_receiver import SmtpReceiver

pytestmark = pytest.mark.django_db

POLICY_WEB = "127.0.0.40"  # mta-sts.<domain> of every test domain
PLAIN_MX, GOOD_MX, WRONG_MX, ROGUE_MX = "127.0.0.41", "127.0.0.42", "127.0.0.43", "127.0.0.44"
MX_ZONE = [
    f"plain.mx.test. IN A {PLAIN_MX}",
    f"good.mx.test. IN A {GOOD_MX}",
    f"wrongcert.mx.test. IN A {WRONG_MX}",
]
ELSEWHERE_ZONE = [f"rogue.elsewhere.test. IN A {ROGUE_MX}"]


def policy(mode: str, *mx: str, max_age: int = 86400) -> str:
    lines = ["version: STSv1", f"mode: {mode}", *(f"mx: {m}" for m in mx), f"max_age: {max_age}"]
    return "\r\n".join(lines) + "\r\n"


# -- peers ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def ca_file(tls_ca, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    tls_ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture(scope="module")
def policy_web(tls_ca):
    with HttpsServer(POLICY_WEB, ca=tls_ca) as server:
        yield server


@pytest.fixture(scope="module")
def receivers(tls_ca, tmp_path_factory):
    certs = tmp_path_factory.mktemp("mx-certs")

    def cert(name: str) -> tuple[str, str]:
        path = str(certs / f"{name}.pem")
        tls_ca.issue_cert(name).private_key_and_cert_chain_pem.write_to_path(path)
        return path, path

    port = settings.SENDMSG_RELAY_PORT
    peers = SimpleNamespace(
        plain=SmtpReceiver(PLAIN_MX, port, hostname="plain.mx.test"),
        good=SmtpReceiver(GOOD_MX, port, tls_cert=cert("good.mx.test"), hostname="good.mx.test"),
        wrong=SmtpReceiver(
            WRONG_MX, port, tls_cert=cert("someone-else.test"), hostname="wrongcert.mx.test"
        ),
        rogue=SmtpReceiver(
            ROGUE_MX, port, tls_cert=cert("rogue.elsewhere.test"), hostname="rogue.elsewhere.test"
        ),
    )
    started = []
    try:
        for receiver in vars(peers).values():
            receiver.start()
            started.append(receiver)
        yield peers
    finally:
        for receiver in started:
            receiver.stop()


@pytest.fixture
def peers(receivers, policy_web, dns_server, ca_file, settings):
    """The MX hosts and the policy web server, clean; the relay trusts the test CA and
    fetches policies from the web server's port."""
    settings.SENDMSG_TLS_CA_FILE = ca_file
    settings.SENDMSG_MTA_STS_PORT = policy_web.port
    dns_server.set_zone("mx.test", MX_ZONE)
    dns_server.set_zone("elsewhere.test", ELSEWHERE_ZONE)
    for receiver in vars(receivers).values():
        receiver.reset()
    policy_web.reset()
    yield SimpleNamespace(web=policy_web, dns=dns_server, **vars(receivers))
    for receiver in vars(receivers).values():
        receiver.reset()


def publish(
    peers, domain: str, *mx: str, policy_text: str | None = None, record_id: str = "1"
) -> None:
    """Publish ``domain`` with MX records ("10 good.mx.test.") and, with a policy text,
    its MTA-STS record and policy."""
    lines = [f"{domain}. IN MX {m}" for m in mx]
    if policy_text is not None:
        lines += [
            f'_mta-sts.{domain}. IN TXT "v=STSv1; id={record_id}"',
            f"mta-sts.{domain}. IN A {POLICY_WEB}",
        ]
        peers.web.serve(f"mta-sts.{domain}", POLICY_PATH, policy_text)
    set_zone(peers, domain, lines)


def set_zone(peers, domain: str, lines: list[str]) -> None:
    """Change a zone and make the relay see it now, not once the cached answers expire."""
    peers.dns.set_zone(domain, lines)
    flush_cache()


def send(domain, *recipients: str) -> Message:
    body = (
        "From: news@acme.test\r\nTo: {}\r\nSubject: tls policy\r\n\r\nHello.\r\n".format(
            ", ".join(recipients)
        )
    ).encode()
    return accept_message(
        sender=Sender(tenant_id=domain.tenant_id),
        mail_from="news@acme.test",
        recipients=list(recipients),
        raw=body,
        source=Source.API,
    )


def outcome(message: Message) -> Recipient:
    deliver_message(message.pk)
    return Recipient.objects.get(message=message)


def events(recipient: Recipient) -> list[tuple[str, int | None, str]]:
    return list(Event.objects.filter(recipient=recipient).values_list("type", "code", "enhanced"))


def fetched(peers, domain: str) -> int:
    return peers.web.requests.count((f"mta-sts.{domain}", POLICY_PATH))


# -- enforce -------------------------------------------------------------------------------


def test_enforce_defers_when_the_mx_offers_no_starttls(verified_domain, peers):
    publish(peers, "e-plain.test", "10 plain.mx.test.", policy_text=policy("enforce", "*.mx.test"))
    recipient = outcome(send(verified_domain, "ann@e-plain.test"))
    assert (recipient.state, recipient.last_code, recipient.last_enhanced) == (
        "deferred",
        451,
        "4.7.4",
    )
    assert "plain.mx.test does not offer STARTTLS" in recipient.last_text
    assert "MTA-STS policy of e-plain.test" in recipient.last_text
    assert events(recipient) == [("accepted", None, ""), ("deferred", 451, "4.7.4")]
    # It connected, saw no STARTTLS and left: no MAIL, no DATA, nothing in clear.
    assert peers.plain.connections == 1
    assert (peers.plain.attempts, peers.plain.messages) == (0, [])
    assert fetched(peers, "e-plain.test") == 1


def test_enforce_defers_when_the_mx_certificate_is_for_another_name(verified_domain, peers):
    publish(
        peers, "e-wrong.test", "10 wrongcert.mx.test.", policy_text=policy("enforce", "*.mx.test")
    )
    recipient = outcome(send(verified_domain, "ann@e-wrong.test"))
    assert (recipient.state, recipient.last_code, recipient.last_enhanced) == (
        "deferred",
        451,
        "4.7.5",
    )
    assert "certificate of wrongcert.mx.test is not valid" in recipient.last_text
    assert events(recipient) == [("accepted", None, ""), ("deferred", 451, "4.7.5")]
    assert peers.wrong.connections == 1
    assert (peers.wrong.attempts, peers.wrong.messages) == (0, [])


def test_enforce_delivers_over_verified_tls(verified_domain, peers):
    publish(peers, "e-good.test", "10 good.mx.test.", policy_text=policy("enforce", "*.mx.test"))
    recipient = outcome(send(verified_domain, "ann@e-good.test"))
    assert (recipient.state, recipient.last_code, recipient.mx_host) == (
        "delivered",
        250,
        "good.mx.test",
    )
    assert [e[0] for e in events(recipient)] == ["accepted", "delivered"]
    [received] = peers.good.messages
    assert received.tls is True
    assert received.rcpt_tos == ["ann@e-good.test"]


def test_enforce_uses_only_mx_hosts_the_policy_names(verified_domain, peers):
    # The preferred MX works and has a valid certificate, but the policy does not name it.
    publish(
        peers,
        "e-rogue.test",
        "10 rogue.elsewhere.test.",
        "20 good.mx.test.",
        policy_text=policy("enforce", "*.mx.test"),
    )
    recipient = outcome(send(verified_domain, "ann@e-rogue.test"))
    assert (recipient.state, recipient.mx_host) == ("delivered", "good.mx.test")
    assert peers.rogue.connections == 0
    assert [m.tls for m in peers.good.messages] == [True]

    # With only unnamed hosts, nothing is tried: deferred.
    publish(
        peers,
        "e-rogue-only.test",
        "10 rogue.elsewhere.test.",
        policy_text=policy("enforce", "mx.e-rogue-only.test", "*.mx.test"),
    )
    recipient = outcome(send(verified_domain, "bob@e-rogue-only.test"))
    assert (recipient.state, recipient.last_code, recipient.last_enhanced) == (
        "deferred",
        451,
        "4.7.0",
    )
    assert "rogue.elsewhere.test is not listed in the MTA-STS policy" in recipient.last_text
    assert peers.rogue.connections == 0


def test_wildcard_pattern_matches_exactly_one_label():
    sts = StsPolicy(mode=Mode.ENFORCE, mx=("*.example.com", "mail.example.net"), max_age=60)
    assert sts.matches("mx1.example.com") and sts.matches("MX1.Example.COM.")
    assert not sts.matches("example.com")
    assert not sts.matches("a.b.example.com")
    assert not sts.matches("xexample.com")
    assert sts.matches("mail.example.net") and not sts.matches("x.mail.example.net")


# -- testing and none ----------------------------------------------------------------------


def test_testing_mode_delivers_despite_a_bad_certificate_and_logs_it(
    verified_domain, peers, caplog
):
    publish(
        peers, "t-wrong.test", "10 wrongcert.mx.test.", policy_text=policy("testing", "*.mx.test")
    )
    with caplog.at_level(logging.WARNING):
        recipient = outcome(send(verified_domain, "ann@t-wrong.test"))
    assert (recipient.state, recipient.mx_host) == ("delivered", "wrongcert.mx.test")
    # The verified handshake failed; a second connection delivered with opportunistic TLS.
    assert peers.wrong.connections == 2
    assert [m.tls for m in peers.wrong.messages] == [True]
    assert "would be refused" in caplog.text and "wrongcert.mx.test" in caplog.text


def test_testing_mode_uses_unlisted_hosts_and_plain_ones(verified_domain, peers, caplog):
    publish(
        peers,
        "t-plain.test",
        "10 rogue.elsewhere.test.",
        policy_text=policy("testing", "*.mx.test"),
    )
    with caplog.at_level(logging.WARNING):
        assert outcome(send(verified_domain, "ann@t-plain.test")).state == "delivered"
    assert len(peers.rogue.messages) == 1
    assert "rogue.elsewhere.test is not in the policy" in caplog.text

    publish(peers, "t-plain2.test", "10 plain.mx.test.", policy_text=policy("testing", "*.mx.test"))
    with caplog.at_level(logging.WARNING):
        assert outcome(send(verified_domain, "bob@t-plain2.test")).state == "delivered"
    assert [m.tls for m in peers.plain.messages] == [False]
    assert "plain.mx.test offers no STARTTLS" in caplog.text


def test_mode_none_and_no_policy_are_opportunistic(verified_domain, peers):
    publish(peers, "n-none.test", "10 wrongcert.mx.test.", policy_text=policy("none"))
    publish(peers, "n-absent.test", "10 plain.mx.test.")
    message = send(verified_domain, "ann@n-none.test", "bob@n-absent.test")
    deliver_message(message.pk)
    states = {r.address: r.state for r in Recipient.objects.filter(message=message)}
    assert states == {"ann@n-none.test": "delivered", "bob@n-absent.test": "delivered"}
    assert [m.tls for m in peers.wrong.messages] == [True]  # encrypted, not verified
    assert [m.tls for m in peers.plain.messages] == [False]
    assert fetched(peers, "n-none.test") == 1


# -- the sending domain requires TLS -------------------------------------------------------


def test_a_sending_domain_that_requires_tls(verified_domain, peers):
    verified_domain.set_require_tls(True)
    publish(peers, "r-plain.test", "10 plain.mx.test.")
    publish(peers, "r-wrong.test", "10 wrongcert.mx.test.")
    publish(peers, "r-good.test", "10 good.mx.test.")
    message = send(verified_domain, "a@r-plain.test", "b@r-wrong.test", "c@r-good.test")
    deliver_message(message.pk)
    found = {r.address: r for r in Recipient.objects.filter(message=message)}
    assert {a: (r.state, r.last_code, r.last_enhanced) for a, r in found.items()} == {
        "a@r-plain.test": ("deferred", 451, "4.7.4"),
        "b@r-wrong.test": ("deferred", 451, "4.7.5"),
        "c@r-good.test": ("delivered", 250, "2.0.0"),
    }
    assert "the sending domain acme.test requires verified TLS" in found["a@r-plain.test"].last_text
    assert events(found["a@r-plain.test"]) == [("accepted", None, ""), ("deferred", 451, "4.7.4")]
    assert (peers.plain.messages, peers.plain.attempts) == ([], 0)
    assert (peers.wrong.messages, peers.wrong.attempts) == ([], 0)
    assert [(m.rcpt_tos, m.tls) for m in peers.good.messages] == [(["c@r-good.test"], True)]

    # Without the setting the same hosts take the mail (opportunistic TLS).
    verified_domain.set_require_tls(False)
    Recipient.objects.filter(state="deferred").update(next_attempt_at=timezone.now())
    deliver_message(message.pk)
    assert set(Recipient.objects.filter(message=message).values_list("state", flat=True)) == {
        "delivered"
    }


def test_require_tls_through_the_api_and_its_tenant_only(verified_domain, outsider):
    def client_for(tenant) -> APIClient:
        _, key = create_api_key(tenant=tenant)
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
        return client

    url = f"/api/v1/domains/{verified_domain.pk}/"
    acme = client_for(verified_domain.tenant)
    assert acme.get(url).json()["require_tls"] is False
    response = acme.patch(url, {"require_tls": True}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["require_tls"] is True
    verified_domain.refresh_from_db()
    assert verified_domain.require_tls is True
    assert acme.patch(url, {"require_tls": "maybe"}, format="json").status_code == 400

    globex = client_for(outsider[0])
    assert globex.patch(url, {"require_tls": False}, format="json").status_code == 404
    verified_domain.refresh_from_db()
    assert verified_domain.require_tls is True


def test_require_tls_on_the_dashboard(verified_domain, owner, outsider):
    url = f"/domains/{verified_domain.pk}/require-tls/"
    stranger = Client()
    stranger.force_login(outsider[1])
    assert stranger.post(url, {"required": "1"}).status_code == 404
    verified_domain.refresh_from_db()
    assert verified_domain.require_tls is False

    client = Client()
    client.force_login(owner[1])
    page = client.get(f"/domains/{verified_domain.pk}/").content
    assert b"Require TLS" in page
    page = client.post(url, {"required": "1"}, follow=True).content
    verified_domain.refresh_from_db()
    assert verified_domain.require_tls is True
    assert b"relayed only over TLS with a verified certificate" in page
    assert b"Stop requiring TLS" in page
    client.post(url, {"required": "0"})
    verified_domain.refresh_from_db()
    assert verified_domain.require_tls is False


def test_require_tls_in_the_admin(verified_domain):
    operator = get_user_model().objects.create_superuser("ops@sendmsg.test", password="pw-ops-1")
    client = Client()
    client.force_login(operator)
    page = client.get(reverse("admin:domains_domain_change", args=[verified_domain.pk]))
    assert b'name="require_tls"' in page.content


# -- fetching and caching policies ---------------------------------------------------------


def test_a_policy_is_fetched_once_and_again_when_its_id_changes(verified_domain, peers):
    publish(peers, "c-id.test", "10 plain.mx.test.", policy_text=policy("testing", "*.mx.test"))
    for address in ("a@c-id.test", "b@c-id.test"):
        assert outcome(send(verified_domain, address)).state == "delivered"
    assert fetched(peers, "c-id.test") == 1

    # A new policy under the same id is not seen: the id says when to fetch.
    peers.web.serve("mta-sts.c-id.test", POLICY_PATH, policy("enforce", "*.mx.test"))
    assert outcome(send(verified_domain, "c@c-id.test")).state == "delivered"
    assert fetched(peers, "c-id.test") == 1

    publish(
        peers,
        "c-id.test",
        "10 plain.mx.test.",
        policy_text=policy("enforce", "*.mx.test"),
        record_id="2",
    )
    recipient = outcome(send(verified_domain, "d@c-id.test"))
    assert (recipient.state, recipient.last_enhanced) == ("deferred", "4.7.4")
    assert fetched(peers, "c-id.test") == 2
    assert len(peers.plain.messages) == 3


def test_a_cached_policy_outlives_a_failed_fetch_and_a_missing_record(verified_domain, peers):
    publish(peers, "c-keep.test", "10 good.mx.test.", policy_text=policy("enforce", "*.mx.test"))
    assert outcome(send(verified_domain, "a@c-keep.test")).state == "delivered"

    # New id, but the policy host answers 404: the cached enforce policy still applies.
    peers.web.forget("mta-sts.c-keep.test", POLICY_PATH)
    set_zone(
        peers,
        "c-keep.test",
        [
            "c-keep.test. IN MX 10 plain.mx.test.",
            '_mta-sts.c-keep.test. IN TXT "v=STSv1; id=2"',
            f"mta-sts.c-keep.test. IN A {POLICY_WEB}",
        ],
    )
    recipient = outcome(send(verified_domain, "b@c-keep.test"))
    assert (recipient.state, recipient.last_enhanced) == ("deferred", "4.7.4")
    assert fetched(peers, "c-keep.test") == 2

    # The TXT record gone (or blocked): still the cached policy, nothing sent in clear.
    set_zone(peers, "c-keep.test", ["c-keep.test. IN MX 10 plain.mx.test."])
    recipient = outcome(send(verified_domain, "c@c-keep.test"))
    assert (recipient.state, recipient.last_enhanced) == ("deferred", "4.7.4")
    assert peers.plain.messages == []


def test_a_policy_is_fetched_again_once_its_max_age_has_passed(verified_domain, peers):
    publish(
        peers,
        "c-age.test",
        "10 good.mx.test.",
        policy_text=policy("enforce", "*.mx.test", max_age=600),
    )
    # The clock goes back, not forward: mail signed "in the future" would fail DKIM.
    start = timezone.now() - timedelta(seconds=1000)
    with time_machine.travel(start):
        assert outcome(send(verified_domain, "a@c-age.test")).state == "delivered"
    with time_machine.travel(start + timedelta(seconds=599)):
        assert outcome(send(verified_domain, "b@c-age.test")).state == "delivered"
    assert fetched(peers, "c-age.test") == 1
    # Now, 1,000 s after the fetch: the policy's 600 s are over.
    assert outcome(send(verified_domain, "c@c-age.test")).state == "delivered"
    assert fetched(peers, "c-age.test") == 2


@pytest.mark.parametrize(
    "case",
    ["redirect", "html", "too_large", "wrong_certificate", "bad_policy", "two_records"],
)
def test_an_unusable_policy_means_no_policy(verified_domain, peers, case, caplog):
    """Nothing cached and no usable policy: delivered as without MTA-STS (§3.3, §5.1)."""
    domain = f"u-{case.replace('_', '-')}.test"
    host = f"mta-sts.{domain}"
    publish(peers, domain, "10 plain.mx.test.", policy_text=policy("enforce", "*.mx.test"))
    if case == "redirect":
        peers.web.serve(
            host,
            POLICY_PATH,
            "",
            status=301,
            headers={"Location": f"https://{host}/elsewhere.txt"},
        )
        peers.web.serve(host, "/elsewhere.txt", policy("enforce", "*.mx.test"))
    elif case == "html":
        peers.web.serve(host, POLICY_PATH, policy("enforce", "*.mx.test"), content_type="text/html")
    elif case == "too_large":
        big = policy("enforce", "*.mx.test") + "x: " + "y" * MAX_POLICY_BYTES + "\r\n"
        peers.web.serve(host, POLICY_PATH, big)
    elif case == "wrong_certificate":
        peers.web.certificate_for(host, "someone-else.test")
    elif case == "bad_policy":
        peers.web.serve(host, POLICY_PATH, policy("enforce", "*.mx.test", max_age=99999999999))
    elif case == "two_records":
        peers.dns.add_lines(domain, [f'_mta-sts.{domain}. IN TXT "v=STSv1; id=2"'])
    with caplog.at_level(logging.INFO, logger="delivery.mta_sts"):
        recipient = outcome(send(verified_domain, f"ann@{domain}"))
    assert recipient.state == "delivered"
    assert [m.tls for m in peers.plain.messages] == [False]
    assert (host, "/elsewhere.txt") not in peers.web.requests  # redirects are not followed
    assert "mta-sts" in caplog.text


def test_a_slow_policy_server_cannot_hold_the_relay(verified_domain, peers, settings):
    """One deadline covers the whole fetch: a server sending a byte at a time is cut off."""
    settings.SENDMSG_MTA_STS_TIMEOUT = 1
    publish(peers, "u-slow.test", "10 plain.mx.test.", policy_text="")
    peers.web.serve("mta-sts.u-slow.test", POLICY_PATH, policy("enforce", "*.mx.test"), drip=0.1)
    started = time.monotonic()
    recipient = outcome(send(verified_domain, "ann@u-slow.test"))
    assert time.monotonic() - started < 3
    assert recipient.state == "delivered"  # no policy could be had: as without MTA-STS
    assert fetched(peers, "u-slow.test") == 1


# -- parsing -------------------------------------------------------------------------------


def test_txt_records_are_parsed_strictly():
    assert parse_record("v=STSv1; id=20160831085700Z") == "20160831085700Z"
    assert parse_record("v=STSv1;id=abc;") == "abc"
    assert parse_record("v=STSv1 ; id=abc ; ext-1=x") == "abc"
    assert parse_record("v=STSv1; id=first; id=second") == "first"
    for bad in (
        "v=STSv1",
        "v=STSv1;",
        "v=STSv1; ext=1",
        "v=STSv1; id=",
        "v=STSv1; id=has-dash",
        "v=STSv1; id=" + "a" * 33,
        "v=STSv1 id=abc",
        "v=STSv2; id=abc",
        "v=STSv1; id=abc;; x=y",
    ):
        with pytest.raises(PolicyError):
            parse_record(bad)


def test_policies_are_parsed_strictly():
    parsed = parse_policy(
        b"version: STSv1\nmode: enforce\nmx: mail.example.com\nmx: *.Example.NET.\n"
        b"max_age: 604800\nfuture_field: anything goes\nmode: none\n\n"
    )
    assert parsed == StsPolicy(
        mode=Mode.ENFORCE, mx=("mail.example.com", "*.example.net"), max_age=604800
    )
    assert parse_policy(b"version: STSv1\r\nmode: none\r\nmax_age: 0").mode == Mode.NONE
    good = "version: STSv1\nmode: testing\nmx: mx.example.com\nmax_age: 86400\n"
    for bad in (
        good.replace("STSv1", "STSv2"),
        good.replace("testing", "Testing"),
        good.replace("86400", "31557601"),
        good.replace("86400", "-1"),
        good.replace("86400", "1 day"),
        good.replace("mx: mx.example.com\n", ""),
        good.replace("mx.example.com", "*.*.example.com"),
        good.replace("mx.example.com", "mx.exa_mple.com"),
        good.replace("mx.example.com", "localhost"),
        good.replace("mode: testing\n", ""),
        good.replace("version: STSv1\n", ""),
        good.replace("version: ", "version : "),
        "\n" + good,
        good.replace("mode: testing\n", "mode: testing\n\n"),
        "<html>" + good,
    ):
        with pytest.raises(PolicyError):
            parse_policy(bad.encode())
    with pytest.raises(PolicyError):
        parse_policy(good.encode() + b"x: \xff\n")


def test_a_kept_connection_without_verified_tls_is_not_used_when_it_is_required(
    verified_domain, peers
):
    # testing mode: the plain MX gets the first message (and its connection is kept) ...
    publish(peers, "c-kept.test", "10 plain.mx.test.", policy_text=policy("testing", "*.mx.test"))
    assert outcome(send(verified_domain, "a@c-kept.test")).state == "delivered"
    # ... then the domain switches to enforce: the kept plain connection must not carry
    # the next message.
    publish(
        peers,
        "c-kept.test",
        "10 plain.mx.test.",
        policy_text=policy("enforce", "*.mx.test"),
        record_id="2",
    )
    recipient = outcome(send(verified_domain, "b@c-kept.test"))
    assert (recipient.state, recipient.last_enhanced) == ("deferred", "4.7.4")
    assert [m.rcpt_tos for m in peers.plain.messages] == [["a@c-kept.test"]]
