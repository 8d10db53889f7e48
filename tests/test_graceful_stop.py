"""SIGTERM, as systemd and Docker send it on every stop, restart and upgrade: what is in
hand finishes, everything else is handed back at once, nothing is lost or sent twice.

Real processes: the SMTP submission listener and a qcluster of the test's own, a real MX
receiver that takes its time before answering each message, and real SMTP clients.
"""

from __future__ import annotations

import collections
import signal
import smtplib
import socket
import time

import pytest
from django.utils import timezone
from django_q.models import OrmQ

from delivery.credentials import create_smtp_credential
from delivery.models import Event, Message, Recipient, RecipientState
from tests.conftest import wait_until
from tests.platform_processes import environment, listener, worker

pytestmark = [pytest.mark.peers, pytest.mark.django_db(transaction=True)]

MX_SECONDS = 2.0
"""How long the MX takes to answer each message's final dot."""


def states() -> collections.Counter:
    return collections.Counter(Recipient.objects.values_list("state", flat=True))


def test_a_stopped_worker_finishes_the_message_in_hand_and_hands_the_rest_back(
    platform, verified_domain, mx, client_tls, tmp_path
):
    credential, password = create_smtp_credential(tenant=verified_domain.tenant)
    platform["workers"].stop()  # only the test's own worker may deliver here
    env = environment()
    smtpd = first = second = None
    try:
        smtpd, port = listener("stop-smtpd", tmp_path, env)
        mx.delay_data(MX_SECONDS)
        with smtplib.SMTP("localhost", port, timeout=15) as client:
            client.starttls(context=client_tls)
            client.login(credential.username, password)
            for index in range(6):
                refused = client.sendmail(
                    "news@acme.test",
                    [f"r{index}@dest.test"],
                    f"From: news@acme.test\r\nSubject: stop {index}\r\n\r\nMessage {index}.\r\n",
                )
                assert refused == {}
        first = worker("stop-worker-1", tmp_path, env)
        wait_until(lambda: mx.attempts >= 1, timeout=30, interval=0.02)

        # SIGTERM while the MX holds the first message(s): each busy worker process
        # finishes the message in its hands, and nothing else is started.
        started = time.monotonic()
        assert first.stop(timeout=30) == 0
        stopped_in = time.monotonic() - started
        now = timezone.now()
        delivered = Recipient.objects.filter(state=RecipientState.DELIVERED).count()
        assert 1 <= delivered <= 2, (states(), first.log()[-3000:])
        assert len(mx.messages) == delivered
        assert stopped_in < 3 * MX_SECONDS  # six messages in two workers would take 6 s
        assert "told to start no new delivery" in first.log()
        # The rest were handed back, not left leased for SENDMSG_LEASE_SECONDS (15 min):
        # due now, for whichever worker runs next.
        waiting = Recipient.objects.exclude(state=RecipientState.DELIVERED)
        assert all(r.lease_until is None or r.lease_until <= now for r in waiting)
        assert set(Recipient.objects.due()) == set(waiting)
        assert not Event.objects.filter(recipient__in=waiting).exclude(type="accepted").exists()

        # A new worker takes the handed-back tasks from the broker, no sweeper needed.
        mx.delay_data(0)
        second = worker("stop-worker-2", tmp_path, env)
        wait_until(lambda: states() == {RecipientState.DELIVERED: 6}, timeout=30)
    finally:
        mx.delay_data(0)
        for process in (first, second, smtpd):
            if process is not None:
                process.stop()
        platform["workers"].start()
        platform["workers"].wait_for_log("running", timeout=60)

    received = collections.Counter(rcpt for m in mx.messages for rcpt in m.rcpt_tos)
    assert received == collections.Counter(f"r{index}@dest.test" for index in range(6))


def test_a_stopped_listener_answers_the_message_being_sent_and_turns_the_rest_away(
    platform, verified_domain, client_tls, tmp_path
):
    credential, password = create_smtp_credential(tenant=verified_domain.tenant)
    platform["workers"].stop()  # the message's wake-up must still be in the broker below
    smtpd, port = listener("stop-listener", tmp_path, environment())
    sending = idle = None
    try:
        sending = logged_in(port, client_tls, credential.username, password)
        idle = logged_in(port, client_tls, credential.username, password)
        assert sending.mail("news@acme.test")[0] == 250
        assert sending.rcpt("late@dest.test")[0] == 250
        sending.putcmd("data")
        assert sending.getreply()[0] == 354
        sending.send(b"From: news@acme.test\r\nSubject: in flight\r\n\r\nThe first half,\r\n")

        smtpd.signal(signal.SIGTERM)

        # New connections find no one; a session between transactions is told at once.
        wait_until(lambda: refused(port), timeout=10, interval=0.05)
        code, text = idle.noop()
        assert (code, text[:6]) == (421, b"4.3.2 "), (text, smtpd.log()[-3000:])
        # The message being sent is still taken, stored and answered ...
        sending.send(b"and the second half.\r\n.\r\n")
        code, text = sending.getreply()
        assert code == 250, (text, smtpd.log()[-3000:])
        # ... and only then is its session told.
        assert sending.noop()[0] == 421
        assert smtpd.wait(timeout=30) == 0, smtpd.log()[-3000:]

        # Checked before the session's workers start again (they would take it at once).
        message = Message.objects.get(subject="in flight")
        assert list(message.recipients.values_list("address", "state")) == [
            ("late@dest.test", RecipientState.QUEUED)
        ]
        # Its wake-up was handed to the broker before the process exited.
        woken = [m for task in OrmQ.objects.all() for m in task.task.get("args", [[]])[0]]
        assert message.id in woken, (woken, smtpd.log()[-3000:])
    finally:
        for client in (sending, idle):
            if client is not None:
                client.close()
        smtpd.stop()
        platform["workers"].start()
        platform["workers"].wait_for_log("running", timeout=60)


def logged_in(port: int, context, username: str, password: str) -> smtplib.SMTP:
    client = smtplib.SMTP("localhost", port, timeout=15)
    client.starttls(context=context)
    client.login(username, password)
    return client


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False
