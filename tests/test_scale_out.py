"""Many processes, one PostgreSQL, one Redis: nothing in the platform assumes a single
process, and a graceful restart of every worker in the middle of a run loses and
duplicates nothing.

Two SMTP submission servers and three worker clusters (django-q2 on Redis, two worker
processes each) run against the suite's PostgreSQL, as they would on several hosts.
Clients push thousands of messages, to recipients at 40 domains behind two real MX
receivers, through both servers at once; when a quarter of the mail is delivered, each
worker cluster in turn is stopped with SIGTERM and started again. Then every accepted
(message, recipient) must have reached a receiver exactly once, and nothing may be left
in the queue.
"""

from __future__ import annotations

import collections
import itertools
import smtplib
import threading

import pytest
from django.conf import settings
from django.db import connection
from django.db.models import Count

from delivery.credentials import create_smtp_credential
from delivery.models import Event, Recipient, RecipientState
from tests.conftest import DKIM_UNCHECKED, received_dkim_problems, wait_until
from tests.peers.smtp_receiver import SmtpReceiver
from tests.platform_processes import environment, listener, sweep_now, worker

pytestmark = [
    pytest.mark.peers,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor != "postgresql",
        reason="PostgreSQL + Redis: runs in `make test`'s PostgreSQL pass",
    ),
    # Thousands of messages: the test verifies a sample itself (below).
    getattr(pytest.mark, DKIM_UNCHECKED)(reason="a sample is verified in the test"),
]

MESSAGES = 2000
CLIENTS = 8
CLUSTERS = 3
DOMAINS = [f"d{n:02}.scale.test" for n in range(40)]
MX_HOSTS = ("127.0.0.3", "127.0.0.4")


def recipients_of(index: int) -> list[str]:
    """1 to 3 recipients, each at another domain."""
    return [
        f"r{index}@{DOMAINS[(index + step * 13) % len(DOMAINS)]}" for step in range(1 + index % 3)
    ]


def mail(index: int) -> str:
    return (
        f"From: news@acme.test\r\nTo: {', '.join(recipients_of(index))}\r\n"
        f"Subject: scale {index}\r\nMessage-ID: <scale-{index}@acme.test>\r\n\r\n"
        f"Message {index}.\r\n"
    )


@pytest.fixture
def receivers(dns_server):
    """Two MX hosts on the relay port; the 40 domains' MX records alternate between them."""
    started = [
        SmtpReceiver(host, settings.SENDMSG_RELAY_PORT, hostname=f"mx{n}.scale.test")
        for n, host in enumerate(MX_HOSTS)
    ]
    for receiver in started:
        receiver.start()
    zone = [f"mx{n}.scale.test. IN A {host}" for n, host in enumerate(MX_HOSTS)]
    zone += [f"{d}. IN MX 10 mx{i % len(MX_HOSTS)}.scale.test." for i, d in enumerate(DOMAINS)]
    dns_server.set_zone("scale.test", zone)
    yield started
    for receiver in started:
        receiver.stop()


def send_share(port: int, indexes: list[int], login: tuple[str, str], context, accepted: list):
    with smtplib.SMTP("localhost", port, timeout=30) as client:
        client.starttls(context=context)
        client.login(*login)
        for index in indexes:
            assert client.sendmail("news@acme.test", recipients_of(index), mail(index)) == {}
            accepted.append(index)


def test_two_listeners_and_three_clusters_on_redis_deliver_each_recipient_once_across_restarts(
    platform, verified_domain, receivers, redis_server, client_tls, tmp_path, tmp_path_factory
):
    credential, password = create_smtp_credential(tenant=verified_domain.tenant)
    env = environment(
        SENDMSG_BROKER=redis_server.url(),
        SENDMSG_SMTP_PROCESSES="1",  # one process per server: two servers, as on two hosts
        SENDMSG_WORKERS="2",
    )
    platform["workers"].stop()  # the session's cluster is on the database broker
    processes = []
    try:
        servers = [listener(f"scale-smtpd-{n}", tmp_path, env) for n in range(2)]
        processes += [process for process, _ in servers]
        clusters = [worker(f"scale-workers-{n}", tmp_path, env) for n in range(CLUSTERS)]
        processes += clusters

        accepted: list[int] = []
        shares = [list(range(n, MESSAGES, CLIENTS)) for n in range(CLIENTS)]
        errors: list[BaseException] = []

        def client(n: int) -> None:
            try:
                port = servers[n % len(servers)][1]
                send_share(port, shares[n], (credential.username, password), client_tls, accepted)
            except BaseException as exc:  # reported by the test below
                errors.append(exc)

        threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
        for thread in threads:
            thread.start()

        # Mid-run: a quarter delivered, then each cluster in turn stopped and started.
        expected_pairs = sum(len(recipients_of(i)) for i in range(MESSAGES))
        wait_until(lambda: delivered() >= expected_pairs // 4, timeout=180, interval=0.2)
        for cluster in clusters:
            assert cluster.stop(timeout=60) == 0, cluster.log()[-3000:]
            assert "told to start no new delivery" in cluster.log()
            cluster.start()
            cluster.wait_for_log("running", timeout=30)
        for thread in threads:
            thread.join(timeout=300)
        assert not errors, errors
        assert sorted(accepted) == list(range(MESSAGES))

        # Nothing left behind: every recipient delivered (the sweeper, as scheduled, is
        # run now and then to cover any wake-up a restart may have cut short).
        def all_delivered() -> bool:
            if delivered() == expected_pairs:
                return True
            sweep_now(env)
            return False

        wait_until(all_delivered, timeout=240, interval=5)
    finally:
        for process in processes:
            process.stop()
        platform["workers"].start()
        platform["workers"].wait_for_log("running", timeout=30)

    # Exactly once, as the receivers saw it ...
    got = collections.Counter(
        (subject(m.data), rcpt) for r in receivers for m in r.messages for rcpt in m.rcpt_tos
    )
    expected = collections.Counter(
        (f"scale {i}", rcpt) for i in range(MESSAGES) for rcpt in recipients_of(i)
    )
    assert got == expected
    # ... and as the platform recorded it.
    assert Recipient.objects.count() == expected_pairs
    assert not Recipient.objects.exclude(state=RecipientState.DELIVERED).exists()
    delivered_events = Event.objects.filter(type="delivered")
    per_recipient = delivered_events.values("recipient").annotate(n=Count("id"))
    assert {row["n"] for row in per_recipient} == {1}
    assert len(per_recipient) == expected_pairs
    # Every cluster did part of the work, and both receivers got mail.
    for cluster in clusters:
        assert cluster.log_path.read_text().count("Processed 'delivery.tasks.deliver'") > 0
    assert all(r.messages for r in receivers)
    # A sample of what arrived carries a DKIM signature two independent verifiers accept.
    sample = list(itertools.islice((m for r in receivers for m in r.messages[::200]), 20))
    assert received_dkim_problems(sample, workdir_factory=tmp_path_factory) == []


def delivered() -> int:
    return Recipient.objects.filter(state=RecipientState.DELIVERED).count()


def subject(data: bytes) -> str:
    for line in data.splitlines():
        if line.startswith(b"Subject: "):
            return line[len(b"Subject: ") :].decode()
    raise AssertionError("no Subject")
