"""The gate in steady state: no statement for keys, tenants, domains or the rate, and the
hourly rate shared by processes through leased permits (reputation/gate.py,
sendmsg/read_cache.py). The rest of the suite reads every row afresh
(SENDMSG_STATE_CACHE_SECONDS=0 in tests/settings.py); these tests turn the caches on."""

from __future__ import annotations

import smtplib
import threading
import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext, override_settings
from rest_framework.test import APIClient

from delivery.accept import AcceptError, Sender, accept_message
from delivery.credentials import create_api_key, create_smtp_credential, revoke
from delivery.models import Message, Source
from domains.models import Domain, DomainStatus, Tenant
from reputation.gate import current_hour
from reputation.models import SendCounter
from reputation.quotas import Quotas, lease_size
from tests.conftest import platform_env
from tests.peers.ports import free_port
from tests.peers.processes import REPO_ROOT, ManagedProcess, manage_py

pytestmark = pytest.mark.django_db(transaction=True)

NOWHERE = "alice@queue.example"
CACHED = override_settings(SENDMSG_STATE_CACHE_SECONDS=60, SENDMSG_QUOTA_LEASE=50)


def api_for(tenant) -> tuple[APIClient, object]:
    api_key, key = create_api_key(tenant=tenant)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client, api_key


def send(client, sender: str = "news@acme.test"):
    return client.post(
        "/api/v1/send/",
        # queue.example is no zone of the test DNS (REFUSED): the platform's workers defer
        # these (no bounce, no SMTP) instead of relaying them into a later test's receiver.
        {"from": {"email": sender}, "to": [NOWHERE], "subject": "s", "text": "x"},
        format="json",
    )


def tables_named(queries: list[dict]) -> set[str]:
    """The tables of these models that the captured statements name."""
    from delivery.models import ApiKey, Event, Recipient
    from reputation.models import Suppression

    models = (ApiKey, Tenant, Domain, SendCounter, Suppression, Message, Recipient, Event)
    return {
        m._meta.db_table for m in models for q in queries if f'"{m._meta.db_table}"' in q["sql"]
    }


@CACHED
def test_steady_state_sends_read_no_key_tenant_domain_or_rate_row(verified_domain):
    client, _ = api_for(verified_domain.tenant)
    assert send(client).status_code == 201  # reads the rows and leases permits
    with CaptureQueriesContext(connection) as captured:
        for _ in range(10):
            assert send(client).status_code == 201
    # Left per message: the suppression lookup and the message's own rows; no API key,
    # tenant, domain or counter.
    assert tables_named(captured.captured_queries) == {
        "reputation_suppression",
        Message._meta.db_table,
        "delivery_recipient",
        "delivery_event",
    }
    assert Message.objects.count() == 11
    # The counter holds what was handed out: one lease covers all eleven.
    assert SendCounter.objects.get().count == lease_size(10_000) == 50


@CACHED
def test_changes_made_here_take_effect_at_the_next_message(verified_domain):
    tenant = verified_domain.tenant
    client, api_key = api_for(tenant)
    assert send(client).status_code == 201

    tenant.suspended = True
    tenant.save()
    assert send(client).json()["error"]["code"] == "account_suspended"
    tenant.suspended = False
    tenant.save()
    assert send(client).status_code == 201

    verified_domain.status = DomainStatus.DISABLED
    verified_domain.save()
    assert send(client).status_code == 403

    revoke(api_key)
    assert send(client).status_code == 401


@CACHED
def test_a_domain_verified_elsewhere_counts_at_once(verified_domain):
    tenant = verified_domain.tenant
    other = Domain.objects.create(tenant=tenant, name="globex-mail.test")
    client, _ = api_for(tenant)
    assert send(client, "a@globex-mail.test").status_code == 403
    # A bulk UPDATE (another process, a DNS re-check) sends no signal here.
    Domain.objects.filter(pk=other.pk).update(status=DomainStatus.VERIFIED)
    assert send(client, "a@globex-mail.test").status_code == 201


@override_settings(SENDMSG_STATE_CACHE_SECONDS=0.3)
def test_a_suspension_made_elsewhere_shows_within_the_cache_time(verified_domain):
    tenant = verified_domain.tenant
    client, _ = api_for(tenant)
    assert send(client).status_code == 201
    Tenant.objects.filter(pk=tenant.pk).update(suspended=True)  # no signal
    time.sleep(0.35)
    response = send(client)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "account_suspended"


@CACHED
def test_leased_permits_never_pass_the_rate(verified_domain):
    tenant = verified_domain.tenant
    Tenant.objects.filter(pk=tenant.pk).update(plan_rate=250)
    assert lease_size(250) == 2
    accepted = refused = 0
    for n in range(260):
        try:
            accept_message(
                sender=Sender(tenant_id=tenant.pk),
                mail_from="news@acme.test",
                recipients=[f"r{n}@queue.example"],
                raw=b"From: news@acme.test\r\nSubject: s\r\n\r\nx\r\n",
                source=Source.API,
            )
            accepted += 1
        except AcceptError as exc:
            assert (exc.code, exc.enhanced, exc.reason) == (451, "4.7.1", "rate_limited")
            assert exc.retry_after and exc.retry_after <= 3601
            refused += 1
    assert (accepted, refused) == (250, 10)
    assert Message.objects.count() == 250
    assert SendCounter.objects.get().count == 250


def test_leases_at_the_limit_leave_the_counter_at_what_was_handed_out(verified_domain):
    """Two processes' leases cross the limit: one is granted part of its lease, the other
    nothing; each gives back what it could not grant, so the hour's counter ends at the
    limit exactly, however the refused messages' transactions end."""
    tenant_id = verified_domain.tenant_id
    first, second = (Quotas(SendCounter, "tenant", "hour", current_hour) for _ in range(2))
    with CACHED:
        assert lease_size(301) == 3
        assert all(first.take(tenant_id, 301) for _ in range(299))  # 100 leases: 300 out
        assert SendCounter.objects.get().count == 300
        assert second.take(tenant_id, 301)  # a lease of 3 with 1 left: 1 granted
        assert SendCounter.objects.get().count == 301
        assert not second.take(tenant_id, 301)  # knows the hour is spent: no statement
        assert first.take(tenant_id, 301)  # its last leased permit
        assert not first.take(tenant_id, 301)  # a lease of 3 with none left
    assert SendCounter.objects.get().count == 301


@pytest.mark.peers
def test_two_submission_processes_stay_within_the_rate_together(
    verified_domain, tls_ca, client_tls, tmp_path
):
    """Two forked listener processes, caches and leases on, four clients at once: the
    tenant's messages stop at its rate exactly, and the rest get 451 4.7.1."""
    tenant = verified_domain.tenant
    rate = 300
    Tenant.objects.filter(pk=tenant.pk).update(plan_rate=rate)
    credential, password = create_smtp_credential(tenant=tenant)
    port, tls_port, inbound_port = free_port(), free_port(), free_port()
    env = {
        **platform_env(),
        "SENDMSG_STATE_CACHE_SECONDS": "60",
        "SENDMSG_QUOTA_LEASE": "50",
        "SENDMSG_SUBMISSION_PORT": str(port),
        "SENDMSG_SUBMISSION_TLS_PORT": str(tls_port),
        "SENDMSG_INBOUND_PORT": str(inbound_port),
    }
    smtpd = ManagedProcess(
        "smtpd-rate",
        manage_py("smtpd", "submission", "--processes", "2"),
        env=env,
        cwd=REPO_ROOT,
        log_dir=tmp_path,
    )
    smtpd.start()
    results: list[int] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as session:
            session.starttls(context=client_tls)
            session.login(credential.username, password)
            for i in range(100):
                try:
                    session.sendmail(
                        "news@acme.test",
                        [f"c{n}-{i}@queue.example"],
                        b"From: news@acme.test\r\nSubject: rate\r\n\r\nx\r\n",
                    )
                    code = 250
                except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
                    # At MAIL when the process knows the hour is spent, else after DATA.
                    code = exc.smtp_code
                    assert exc.smtp_error.startswith(b"4.7.1"), exc.smtp_error
                with lock:
                    results.append(code)

    try:
        smtpd.wait_for_port("127.0.0.1", port)
        threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not any(thread.is_alive() for thread in threads)
    finally:
        smtpd.stop()
    assert len(results) == 400 and set(results) == {250, 451}
    accepted = results.count(250)
    # Never over the rate; under it by at most the permits a process may still hold
    # when its own sessions end (a lease is 3 here: one spent at once, two kept).
    with CACHED:
        assert lease_size(rate) == 3
    assert rate - 2 * 2 <= accepted <= rate
    assert Message.objects.filter(tenant=tenant).count() == accepted
    assert SendCounter.objects.get(tenant=tenant).count == rate
