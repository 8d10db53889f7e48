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
def mx(mx_receiver: SmtpReceiver) -> SmtpReceiver:
    mx_receiver.reset()
    yield mx_receiver
    mx_receiver.reset()


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
