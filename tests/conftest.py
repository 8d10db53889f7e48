"""Fixtures: real peers (DNS server, MX receivers, the platform's own processes) and personas."""

from __future__ import annotations

import json
import os
import ssl
import time
from io import StringIO
from pathlib import Path

import pytest
import trustme
from django.conf import settings
from django.core.management import call_command
from django.db import connection

from tests.peers.dns_server import DnsServer
from tests.peers.processes import REPO_ROOT, ManagedProcess, manage_py
from tests.peers.redis_server import RedisServer
from tests.peers.smtp_receiver import SmtpReceiver
from tests.settings import TEST_ENV

MX_ADDRESS = "127.0.0.2"  # the recipients' MX (dest.test) listens here
PLATFORM_ZONE = [
    "rp.sendmsg.test. IN MX 10 mx.sendmsg.test.",
    'rp.sendmsg.test. IN TXT "v=spf1 ip4:127.0.0.1 -all"',
    'spf.rp.sendmsg.test. IN TXT "v=spf1 ip4:127.0.0.1 -all"',
    "mx.sendmsg.test. IN A 127.0.0.1",
]
DEST_ZONE = [
    "dest.test. IN MX 10 mx.dest.test.",
    f"mx.dest.test. IN A {MX_ADDRESS}",
]


def run_command(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def run_json(*args: str) -> dict:
    return json.loads(run_command(*args, "--json"))


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """pytest-django's, and on PostgreSQL: sessions still open at the end (the live
    server's request threads end without closing theirs) are ended, so the test
    database can be dropped."""
    yield
    if connection.vendor == "postgresql":
        with django_db_blocker.unblock(), connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )


@pytest.fixture(scope="session")
def tls_ca() -> trustme.CA:
    """A test CA; the platform's listeners get a certificate from it."""
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1", settings.SENDMSG_HOSTNAME)
    Path(settings.SENDMSG_TLS_CERT).parent.mkdir(parents=True, exist_ok=True)
    cert.private_key_pem.write_to_path(settings.SENDMSG_TLS_KEY)
    cert.cert_chain_pems[0].write_to_path(settings.SENDMSG_TLS_CERT)
    return ca


@pytest.fixture(scope="session")
def client_tls(tls_ca: trustme.CA) -> ssl.SSLContext:
    """What a careful SMTP client uses: verify the platform's certificate."""
    context = ssl.create_default_context()
    tls_ca.configure_trust(context)
    return context


@pytest.fixture(scope="session")
def dns_server(tmp_path_factory) -> DnsServer:
    server = DnsServer(tmp_path_factory.mktemp("dns"))
    server.port = int(settings.SENDMSG_DNS_SERVERS[0].rsplit(":", 1)[1])
    server.start()
    server.set_zone("sendmsg.test", PLATFORM_ZONE)
    server.set_zone("dest.test", DEST_ZONE)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mx_receiver() -> SmtpReceiver:
    """The recipients' MX host, at dest.test's MX address on the relay port."""
    receiver = SmtpReceiver(MX_ADDRESS, settings.SENDMSG_RELAY_PORT, hostname="mx.dest.test")
    receiver.start()
    yield receiver
    receiver.stop()


@pytest.fixture
def redis_server(tmp_path_factory) -> RedisServer:
    """An empty Redis of the test's own, for django-q2's Redis broker."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def mx(mx_receiver: SmtpReceiver) -> SmtpReceiver:
    """The session's receiver, reset; connections kept open by the platform's workers
    from earlier tests are cut, so this test's script applies from a new connection."""
    mx_receiver.reset()
    mx_receiver.drop_connections()
    yield mx_receiver
    mx_receiver.reset()


# -- DKIM of everything the receivers got ---------------------------------------------------

DKIM_UNCHECKED = "dkim_unchecked"

# (receiver, message) for every message any SmtpReceiver records during the current test.
_received_during_test: list = []
SmtpReceiver.observers.append(
    lambda receiver, message: _received_during_test.append((receiver, message))
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{DKIM_UNCHECKED}(reason): receivers deliberately get mail whose DKIM signatures "
        "do not verify; skip checking them (see the received_mail_dkim fixture)",
    )
    _flush_again_after_a_deadlock()


def _flush_again_after_a_deadlock(attempts: int = 5) -> None:
    """After each transactional test the test database is emptied with one TRUNCATE of
    every table. The platform's processes (tests/conftest.py ``platform``) keep working
    meanwhile, and on PostgreSQL a worker's transaction that writes two tables can lock
    one the TRUNCATE has not reached yet: a deadlock, which PostgreSQL breaks by failing
    one side. When the failed side is the flush, it is tried again (it rolled back whole);
    the worker's side is an ordinary failed task, retried by the platform itself."""
    from django.core.management.base import CommandError
    from django.core.management.commands import flush

    handle = flush.Command.handle

    def handle_again(self, *args, **options):
        for attempt in range(1, attempts + 1):
            try:
                return handle(self, *args, **options)
            except CommandError as exc:
                if attempt == attempts or "deadlock" not in str(exc.__cause__).lower():
                    raise
                time.sleep(0.1 * attempt)
        return None

    flush.Command.handle = handle_again


@pytest.fixture(autouse=True)
def received_mail_dkim(request: pytest.FixtureRequest, tmp_path_factory):
    """After each test, every message an SMTP receiver (tests/peers/smtp_receiver.py) got
    during it is checked by two DKIM verifiers that share no code with dkimpy, Perl's
    Mail::DKIM and OpenDKIM (tests/peers/dkim_verifiers.py), against the keys in the test
    DNS server.

    All relayed mail is signed: each DKIM-Signature, RSA and Ed25519 alike, must pass both
    verifiers, and an Ed25519 signature must have an RSA one for the same domain beside
    it. Otherwise the test errors at teardown, naming the message and each verifier's
    verdict. Checked: what the receivers a test started itself got, and what the session's
    ``mx_receiver`` got if the test uses it (through ``mx``, ``platform``, ...); mail the
    platform's background worker relays during a test that uses no receiver is not that
    test's business. Messages without a DKIM-Signature header (peer tests sending unsigned
    mail) are not checked. A test whose receivers deliberately get tampered or
    unverifiable signatures opts out with ``@pytest.mark.dkim_unchecked(reason="...")``.

    Verification runs once the test is done, with DNS as the test left it; the verifier
    runs are subprocesses, run in parallel threads.
    """
    _received_during_test.clear()
    yield
    received, _received_during_test[:] = list(_received_during_test), []
    if request.node.get_closest_marker(DKIM_UNCHECKED):
        return
    uses_mx_receiver = "mx_receiver" in request.fixturenames
    session_mx = (MX_ADDRESS, settings.SENDMSG_RELAY_PORT)
    received = [
        message
        for receiver, message in received
        if uses_mx_receiver or (receiver.host, receiver.port) != session_mx
    ]
    problems = received_dkim_problems(received, workdir_factory=tmp_path_factory)
    if problems:
        pytest.fail(
            f"DKIM signatures of received mail do not verify ({len(problems)} problem(s); "
            f"a deliberate case takes @pytest.mark.{DKIM_UNCHECKED}):\n" + "\n".join(problems),
            pytrace=False,
        )


def received_dkim_problems(messages: list, *, workdir_factory) -> list[str]:
    """What is wrong with the DKIM signatures of these received messages (see
    ``received_mail_dkim``), one line each; [] when every signature verifies."""
    from tests.peers.dkim_verifiers import dkim_signatures, signature_problems, verify_messages

    signed = [message for message in messages if dkim_signatures(message.data)]
    if not signed:
        return []
    host, _, port = settings.SENDMSG_DNS_SERVERS[0].rpartition(":")
    verdicts = verify_messages(
        [message.data for message in signed],
        dns_host=host,
        dns_port=int(port),
        workdir=workdir_factory.mktemp("dkim-check"),
    )
    return [
        f"message to {message.rcpt_tos} from <{message.mail_from}>: {problem}"
        for message, found in zip(signed, verdicts, strict=True)
        for problem in signature_problems(found)
    ]


@pytest.fixture(autouse=True)
def relay_dns_cache():
    """The relay keeps DNS answers for their TTL (delivery.mx); each test starts without
    them, so the zones it sets are what the relay sees. A test that changes a zone after
    the relay has read it calls ``flush_cache()`` itself."""
    from delivery.mx import flush_cache

    flush_cache()
    yield
    flush_cache()


@pytest.fixture(autouse=True)
def read_caches():
    """Each test starts with nothing kept of keys, tenants and domains, and no permits
    leased (sendmsg/read_cache.py, reputation/gate.py)."""
    from reputation.gate import hourly, warm_up
    from sendmsg.read_cache import clear_all

    for forget in (clear_all, hourly.clear, warm_up.clear):
        forget()
    yield
    for forget in (clear_all, hourly.clear, warm_up.clear):
        forget()


@pytest.fixture(autouse=True)
def relay_kept_connections():
    """The relay keeps connections to MX hosts between tasks (delivery.outbound); each
    test starts and ends without them, so its receiver's script applies from the first
    connection."""
    from delivery.outbound import kept_connections

    kept_connections().close()
    yield
    kept_connections().close()


def platform_env() -> dict[str, str]:
    """The environment of a platform process started by a test: the test database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(TEST_ENV)
    env["DJANGO_SETTINGS_MODULE"] = "sendmsg.settings"
    env["DATABASE_URL"] = database_url()
    return env


def database_url() -> str:
    """The test database (its name set by pytest-django) as a DATABASE_URL."""
    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


@pytest.fixture(scope="session")
def platform(django_db_setup, django_db_blocker, tls_ca, dns_server, mx_receiver, tmp_path_factory):
    """The SMTP listeners and a qcluster, as real processes on the test database."""
    logs = tmp_path_factory.mktemp("platform-logs")
    env = platform_env()
    smtpd = ManagedProcess("smtpd", manage_py("smtpd"), env=env, cwd=REPO_ROOT, log_dir=logs)
    workers = ManagedProcess(
        "qcluster", manage_py("qcluster"), env=env, cwd=REPO_ROOT, log_dir=logs
    )
    smtpd.start()
    workers.start()
    try:
        for port in ("SUBMISSION_PORT", "SUBMISSION_TLS_PORT", "INBOUND_PORT"):
            smtpd.wait_for_port("127.0.0.1", getattr(settings, f"SENDMSG_{port}"))
        workers.wait_for_log("running", timeout=30)
        yield {"smtpd": smtpd, "workers": workers}
    finally:
        workers.stop()
        smtpd.stop()


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


# -- personas -----------------------------------------------------------------------------


@pytest.fixture
def owner(db):
    """A tenant 'Acme' with its owner; returns (tenant, user)."""
    from domains.tenancy import create_tenant

    new = create_tenant(name="Acme", owner_email="owner@acme.test")
    return new.tenant, new.owner


@pytest.fixture
def member(owner):
    from django.contrib.auth import get_user_model

    from domains.models import Membership, Role

    user = get_user_model().objects.create_user("dev@acme.test", password="pw-member-1")
    Membership.objects.create(tenant=owner[0], user=user, role=Role.DEVELOPER)
    return owner[0], user


@pytest.fixture
def outsider(db):
    """Another tenant 'Globex' with its owner, who must never see Acme's data."""
    from domains.tenancy import create_tenant

    new = create_tenant(name="Globex", owner_email="owner@globex.test")
    return new.tenant, new.owner


def publish_domain(dns_server: DnsServer, name: str) -> None:
    """Publish what `domain records` prints, as a tenant would at their DNS provider."""
    lines = [
        line
        for line in run_command("domain", "records", name).splitlines()
        if line and not line.startswith(";")
    ]
    dns_server.set_zone(name, lines)


@pytest.fixture
def verified_domain(owner, dns_server):
    """acme.test added, its records published in the test DNS, and checked: verified."""
    from domains.tenancy import add_domain

    domain = add_domain(tenant=owner[0], name="acme.test")
    publish_domain(dns_server, "acme.test")
    assert run_command("domain", "check", "acme.test").splitlines()[-1] == "verified"
    domain.refresh_from_db()
    return domain
