"""Invariant 3 for real: the worker dies at the worst moment and no accepted message is lost.

Real processes on a file-backed database: an SMTP submission listener accepts mail, a
qcluster of our own relays it, and while the receiving MX holds its reply to DATA the
worker's whole process group is killed with SIGKILL. Once the dead worker's lease has
run out, the sweeper hands its recipients to a new worker, which delivers every accepted
message. The receiver discards a DATA it never answered (as a real MTA does when the
client goes away), so each message must arrive exactly once.

It runs on both of django-q2's brokers: the database (the default) and Redis (the
production one). Redis pops a task without acknowledgement, so the killed worker's task
is gone from Redis too: only the database lease and the sweeper bring its mail back.
"""

from __future__ import annotations

import collections
import os
import signal
import smtplib
import time
from email.message import EmailMessage
from email.policy import SMTP

import pytest
from django.utils import timezone

from delivery.credentials import create_smtp_credential
from delivery.models import Event, Recipient, RecipientState
from tests.conftest import wait_until
from tests.peers.processes import ManagedProcess, group_exists, group_members
from tests.peers.smtp_receiver import HANG_END_OF_DATA
from tests.platform_processes import environment, listener, sweep_now, worker

pytestmark = [pytest.mark.peers, pytest.mark.django_db(transaction=True)]

RELAY_TIMEOUT = 2
"""Seconds the worker waits for each SMTP reply: the window in which the test must kill it
while the receiver holds DATA (past it, the worker would record a deferral itself)."""
LEASE_SECONDS = RELAY_TIMEOUT * 6 + 2
"""As short as the system checks allow: lease > task timeout > a worst-case transaction."""
WORKER_ENV = {
    "SENDMSG_RELAY_TIMEOUT": str(RELAY_TIMEOUT),
    "SENDMSG_TASK_TIMEOUT": str(LEASE_SECONDS - 1),
    "SENDMSG_LEASE_SECONDS": str(LEASE_SECONDS),
    # A spurious timeout on a loaded machine then costs a second, not the test.
    "SENDMSG_RETRY_FIRST_SECONDS": "1",
}


def message(index: int, recipients: list[str]) -> bytes:
    mail = EmailMessage()
    mail["From"] = "Acme News <news@acme.test>"
    mail["To"] = ", ".join(recipients)
    mail["Subject"] = f"crash test {index}"
    mail["Message-ID"] = f"<crash-{index}@acme.test>"
    mail.set_content(f"Message {index}.\n")
    return mail.as_bytes(policy=SMTP)


def submit(client: smtplib.SMTP, index: int, recipients: list[str]) -> None:
    refused = client.sendmail("news@acme.test", recipients, message(index, recipients))
    assert refused == {}


def delivered() -> set[str]:
    return set(
        Recipient.objects.filter(state=RecipientState.DELIVERED).values_list("address", flat=True)
    )


def wait_for_delivered(addresses: set[str], *workers: ManagedProcess | None) -> None:
    """Wait until exactly ``addresses`` are delivered; on timeout, say where each
    recipient stands and what the workers logged."""
    try:
        wait_until(lambda: delivered() == addresses, timeout=30)
    except AssertionError:
        states = [
            (r.address, r.state, r.attempts, r.last_code, r.last_text, r.lease_until)
            for r in Recipient.objects.order_by("address")
        ]
        logs = "\n".join(w.log()[-3000:] for w in workers if w is not None)
        raise AssertionError(f"not delivered in time: {states}\n{logs}") from None


@pytest.fixture(params=["database", "redis"])
def broker_env(request) -> dict[str, str]:
    """The environment of the test's processes: the session's, the short lease, and the
    broker under test."""
    env = environment(**WORKER_ENV)
    if request.param == "redis":
        env["SENDMSG_BROKER"] = request.getfixturevalue("redis_server").url()
    return env


def test_sigkill_while_the_mx_holds_data_loses_and_duplicates_nothing(
    platform, verified_domain, mx, client_tls, tmp_path, broker_env
):
    credential, password = create_smtp_credential(tenant=verified_domain.tenant)
    # The session's own worker would compete for the mail; only ours may run here.
    platform["workers"].stop()
    first = second = smtpd = None
    try:
        smtpd, port = listener("crash-smtpd", tmp_path, broker_env)
        first = worker("crash-worker-1", tmp_path, broker_env)
        with smtplib.SMTP("localhost", port, timeout=15) as client:
            client.starttls(context=client_tls)
            client.login(credential.username, password)
            # One delivered before the crash ...
            submit(client, 0, ["r0@dest.test"])
            wait_for_delivered({"r0@dest.test"}, first)
            # ... then the receiver holds the final dot of whatever comes next.
            mx.hang_after(HANG_END_OF_DATA)
            for index in range(1, 5):
                submit(client, index, [f"r{index}@dest.test"])
            submit(client, 5, ["r5a@dest.test", "r5b@dest.test"])
        accepted = set(Recipient.objects.values_list("address", flat=True))
        assert len(accepted) == 7

        mx.wait_for_holding(1, timeout=20)
        in_flight = set(
            Recipient.objects.filter(state=RecipientState.SENDING).values_list("address", flat=True)
        )
        assert in_flight, "the held DATA's recipient must be `sending` when the worker dies"
        pgid = first.pid
        members = group_members(pgid)
        assert len(members) > 1  # the cluster's main process and the workers it forked
        os.killpg(pgid, signal.SIGKILL)
        wait_until(lambda: not group_exists(pgid), timeout=10, interval=0.02)
        assert first.stop() == -signal.SIGKILL

        # The receiver saw the connection go and discarded the message it never answered.
        mx.wait_for_holding(0, timeout=10)
        assert [m.rcpt_tos for m in mx.messages] == [["r0@dest.test"]]
        held = Recipient.objects.filter(address__in=in_flight)
        assert {r.state for r in held} == {RecipientState.SENDING}
        assert not Event.objects.filter(recipient__in=held).exclude(type="accepted").exists()

        # The receiver works again and a new worker starts. The sweeper's next run hands
        # it the mail nobody had claimed; the dead worker's recipients stay leased ...
        mx.hang_after(None)
        second = worker("crash-worker-2", tmp_path, broker_env)
        lease_end = max(r.lease_until for r in held)
        sweep_now(broker_env)
        wait_for_delivered(accepted - in_flight, second)
        if timezone.now() < lease_end:  # (a very slow machine may already be past it)
            assert {r.state for r in held} == {RecipientState.SENDING}
        # ... until their lease is over: then the sweeper hands them on as well.
        time.sleep(max(0.0, (lease_end - timezone.now()).total_seconds()) + 0.2)
        assert sweep_now(broker_env) >= 1
        wait_for_delivered(accepted, second)
    finally:
        for process in (first, second, smtpd):
            if process is not None:
                process.stop()
        mx.hang_after(None)
        platform["workers"].start()
        platform["workers"].wait_for_log("running", timeout=30)

    # Every accepted recipient delivered once, and the receiver got each exactly once.
    for recipient in Recipient.objects.all():
        types = list(recipient.events.values_list("type", flat=True))
        assert types.count("delivered") == 1, (recipient.address, types)
    received = collections.Counter(
        (subject(m.data), rcpt) for m in mx.messages for rcpt in m.rcpt_tos
    )
    expected = {(f"crash test {i}", f"r{i}@dest.test") for i in range(5)}
    expected |= {("crash test 5", "r5a@dest.test"), ("crash test 5", "r5b@dest.test")}
    assert received == collections.Counter(expected)
    assert mx.attempts > len(mx.messages)  # the held DATA: an attempt that delivered nothing


def subject(data: bytes) -> str:
    for line in data.splitlines():
        if line.startswith(b"Subject: "):
            return line[len(b"Subject: ") :].decode()
    raise AssertionError("no Subject")
