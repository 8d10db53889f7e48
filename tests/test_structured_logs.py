"""Structured logs (sendmsg/log_context.py): every line of the delivery path names the
message (queue id and database id) and the recipients it is about, as an operator reads
it: real deliveries to a real MX that refuses or defers some recipients, a webhook to a
real HTTP receiver that fails, a DSN matched to its recipient, and a real process logging
in the JSON format."""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from delivery.accept import Sender, accept_message
from delivery.credentials import create_api_key
from delivery.models import Message, Recipient, RecipientState, Source
from delivery.relay import deliver_messages
from delivery.verp import verp_address
from delivery.webhooks import tasks as webhook_tasks
from reputation.inbound import store_reports
from sendmsg.log_context import (
    ContextFilter,
    JsonFormatter,
    PlainFormatter,
    log_context,
    message_context,
)
from tests.conftest import platform_env
from tests.peers.http_receiver import HttpReceiver
from tests.peers.processes import REPO_ROOT, manage_py

pytestmark = pytest.mark.django_db

DELIVERY_PATH = ("delivery.", "reputation.inbound", "reputation.complaints")
BOUNCES = Path(__file__).resolve().parent / "fixtures" / "bounces"


class Captured:
    """What the console handler would write, in both formats, for the records logged."""

    def __init__(self) -> None:
        self.json_out, self.plain_out = io.StringIO(), io.StringIO()
        self.handlers = []
        for out, formatter in (
            (self.json_out, JsonFormatter()),
            (self.plain_out, PlainFormatter()),
        ):
            handler = logging.StreamHandler(out)
            handler.addFilter(ContextFilter())
            handler.setFormatter(formatter)
            self.handlers.append(handler)

    def lines(self) -> list[dict]:
        text = self.json_out.getvalue()
        assert text.endswith("\n")
        return [json.loads(line) for line in text.splitlines()]  # one object a line

    def delivery_lines(self) -> list[dict]:
        return [line for line in self.lines() if line["logger"].startswith(DELIVERY_PATH)]

    def plain(self) -> list[str]:
        return self.plain_out.getvalue().splitlines()


@pytest.fixture
def captured() -> Iterator[Captured]:
    capture = Captured()
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)
    for handler in capture.handlers:
        root.addHandler(handler)
    try:
        yield capture
    finally:
        for handler in capture.handlers:
            root.removeHandler(handler)
        root.setLevel(level)


def send(domain, *recipients: str, subject: str = "logs") -> Message:
    return accept_message(
        sender=Sender(tenant_id=domain.tenant_id),
        mail_from="news@acme.test",
        recipients=list(recipients),
        raw=f"From: news@acme.test\r\nSubject: {subject}\r\n\r\nHello.\r\n".encode(),
        source=Source.API,
    )


def assert_names_its_message(line: dict, messages: dict[int, Message]) -> Message:
    """The line carries queue_id, message_id and recipient_ids of one of ``messages``."""
    assert {"queue_id", "message_id", "recipient_ids"} <= line.keys(), line
    message = messages[line["message_id"]]
    assert line["queue_id"] == message.queue_id, line
    assert line["tenant_id"] == message.tenant_id, line
    own = set(Recipient.objects.filter(message=message).values_list("pk", flat=True))
    assert line["recipient_ids"] and set(line["recipient_ids"]) <= own, line
    return message


def test_every_line_of_a_relay_run_names_its_message_and_recipients(
    verified_domain, dns_server, mx, captured
):
    """Two messages in one run over one kept connection, one sent through the REST API:
    delivered, refused (a warning), deferred at RCPT, and one recipient whose only MX is
    down. Each line names the message and exactly the recipients it is about."""
    mx.reply_rcpt("nobody@dest.test", "550 5.1.1 No such user")
    mx.reply_rcpt("later@dest.test", "451 4.2.0 Greylisted, try later")
    dns_server.set_zone(
        "down.test", ["down.test. IN MX 10 mx.down.test.", "mx.down.test. IN A 127.0.0.4"]
    )
    client = APIClient()
    client.credentials(
        HTTP_AUTHORIZATION=f"Bearer {create_api_key(tenant=verified_domain.tenant)[1]}"
    )
    response = client.post(
        "/api/v1/send/",
        {
            "from": "news@acme.test",
            "to": ["alice@dest.test", "zoe@down.test"],
            "subject": "one",
            "text": "Hi",
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    first = Message.objects.get(queue_id=response.json()["id"])
    second = send(verified_domain, "bob@dest.test", "nobody@dest.test", "later@dest.test")
    messages = {first.pk: first, second.pk: second}

    assert deliver_messages([first.pk, second.pk]) == (5, [])

    lines = captured.delivery_lines()
    loggers = {line["logger"] for line in lines}
    assert {"delivery.accept", "delivery.relay", "delivery.outcomes"} <= loggers
    for line in lines:
        assert_names_its_message(line, messages)

    def about(address: str) -> list[dict]:
        pk = Recipient.objects.get(address=address).pk
        return [line for line in lines if line["recipient_ids"] == [pk]]

    [bounced] = [
        line for line in about("nobody@dest.test") if line["logger"] == "delivery.outcomes"
    ]
    assert bounced["level"] == "WARNING" and bounced["message_id"] == second.pk
    assert bounced["message"].startswith("bounced mx=mx.dest.test reply=550 5.1.1")
    [deferred] = [
        line for line in about("later@dest.test") if line["logger"] == "delivery.outcomes"
    ]
    assert deferred["message"].startswith("deferred") and deferred["queue_id"] == second.queue_id
    [mx_down] = [line for line in about("zoe@down.test") if line["logger"] == "delivery.relay"]
    assert mx_down["message"].startswith("mx=mx.down.test (127.0.0.4) failed")
    assert mx_down["queue_id"] == first.queue_id and mx_down["rcpt_domain"] == "down.test"
    [accepted] = [
        line
        for line in lines
        if line["logger"] == "delivery.accept" and line["message_id"] == first.pk
    ]
    assert set(accepted["recipient_ids"]) == set(first.recipients.values_list("pk", flat=True))
    assert Recipient.objects.get(address="alice@dest.test").state == RecipientState.DELIVERED

    # The plain format: the same line, its fields as key=value after the message.
    plain = [line for line in captured.plain() if " WARNING delivery.outcomes bounced " in line]
    [line] = plain
    assert re.search(
        rf" queue_id={second.queue_id} message_id={second.pk} "
        rf"recipient_ids={bounced['recipient_ids'][0]} tenant_id={second.tenant_id}( |$)",
        line,
    ), line


def test_a_webhook_attempt_names_the_event_it_carries(verified_domain, mx, settings, captured):
    settings.SENDMSG_WEBHOOK_ALLOW_PRIVATE = True
    with HttpReceiver("127.0.0.5") as receiver:
        receiver.reply(500)
        client = APIClient()
        client.credentials(
            HTTP_AUTHORIZATION=f"Bearer {create_api_key(tenant=verified_domain.tenant)[1]}"
        )
        created = client.post(
            "/api/v1/webhooks/",
            {"url": receiver.url(), "event_types": ["delivered"]},
            format="json",
        )
        assert created.status_code == 201, created.content
        message = send(verified_domain, "alice@dest.test")
        deliver_messages([message.pk])
        assert webhook_tasks.dispatch() == 1
    [line] = [line for line in captured.lines() if line["logger"] == "delivery.webhooks.sender"]
    alice = Recipient.objects.get(message=message)
    assert (line["level"], line["message"].split(" in ")[0]) == (
        "WARNING",
        "webhook delivered attempt 1: HTTP 500",
    )
    assert (line["queue_id"], line["message_id"], line["recipient_ids"]) == (
        message.queue_id,
        message.pk,
        [alice.pk],
    )
    assert {"event_id", "webhook_delivery_id", "endpoint_id"} <= line.keys()


def test_a_dsn_matched_to_its_recipient_is_logged_with_it(verified_domain, mx, captured):
    message = send(verified_domain, "dave@dest.test", "erin@dest.test")
    deliver_messages([message.pk])
    dave = Recipient.objects.get(message=message, address="dave@dest.test")
    return_path = verp_address(
        tenant_id=dave.tenant_id,
        message_id=message.pk,
        recipient_id=dave.pk,
        host=verified_domain.return_path_host,
    )
    data = (BOUNCES / "postfix-5.1.1-user-unknown.eml").read_bytes()
    data = data.replace(b"{return_path}", return_path.encode()).replace(
        b"{rcpt}", b"dave@dest.test"
    )
    assert store_reports(rcpt_tos=[return_path], envelope_from="", peer="127.0.0.9", raw=data) == 1
    [line] = [line for line in captured.lines() if line["logger"] == "reputation.inbound"]
    assert line["message"] == "inbound dsn report from 127.0.0.9: bounced"
    # What the bounce did on its way (the address suppressed) says whose bounce it was.
    [suppressed] = [
        line for line in captured.lines() if line["logger"] == "reputation.suppressions"
    ]
    for logged in (line, suppressed):
        assert (logged["queue_id"], logged["message_id"], logged["recipient_ids"]) == (
            message.queue_id,
            message.pk,
            [dave.pk],
        )


def test_contexts_nest_reach_library_loggers_and_follow_exceptions_out(captured):
    class Stored:
        queue_id, pk, tenant_id = "Q1", 7, 3

    library = logging.getLogger("some.library")
    with log_context(message_ids=[7, 8]):
        library.info("one step for two messages")
        try:
            with message_context(Stored(), [70, 71]), log_context(rcpt_domain="dest.test"):
                library.info("inside")
                raise OSError("connection reset")
        except OSError:
            pass
        try:
            with message_context(Stored(), [70]):
                raise RuntimeError("boom")
        except RuntimeError:
            logging.getLogger("delivery.tasks").exception("failed, logged further out")
    library.info("outside")
    lines = captured.lines()
    assert [
        {k: v for k, v in line.items() if k not in ("time", "level", "logger")}
        for line in lines[:2]
    ] == [
        {"message": "one step for two messages", "message_ids": [7, 8]},
        {
            "message": "inside",
            "queue_id": "Q1",
            "message_id": 7,
            "recipient_ids": [70, 71],
            "tenant_id": 3,
            "rcpt_domain": "dest.test",
        },
    ]
    failed = lines[2]
    assert (failed["queue_id"], failed["recipient_ids"]) == ("Q1", [70])
    assert "RuntimeError: boom" in failed["exception"]
    assert lines[3]["message"] == "outside"
    assert not {"queue_id", "message_ids"} & lines[3].keys()
    assert "message_ids" not in lines[1]  # one message's context replaces the step's list
    plain = captured.plain()
    assert plain[0].endswith("some.library one step for two messages message_ids=7,8")
    assert plain[2].endswith(
        "failed, logged further out queue_id=Q1 message_id=7 recipient_ids=70 tenant_id=3"
    )
    assert plain[3] == "Traceback (most recent call last):"  # on lines of its own, after


@pytest.mark.peers
@pytest.mark.django_db(transaction=True)
def test_a_real_process_logs_one_json_object_a_line_with_the_ids(verified_domain, mx):
    """The worker task in a process of its own, configured only by the environment:
    with SENDMSG_LOG_FORMAT=json its stderr is JSON lines naming the message."""
    mx.reply_rcpt("nobody@dest.test", "550 5.1.1 No such user")
    script = textwrap.dedent(
        f"""
        from delivery.accept import Sender, accept_message
        from delivery.models import Source
        from delivery.tasks import deliver
        message = accept_message(
            sender=Sender(tenant_id={verified_domain.tenant_id}),
            mail_from="news@acme.test",
            recipients=["alice@dest.test", "nobody@dest.test"],
            raw=b"From: news@acme.test\\r\\nSubject: process\\r\\n\\r\\nHi\\r\\n",
            source=Source.API,
        )
        deliver([message.pk])
        print(message.queue_id)
        """
    )
    env = {
        **platform_env(),
        "SENDMSG_LOG_FORMAT": "json",
        # Its wake-up would go to the broker only after this: the process delivers first.
        "SENDMSG_WAKE_WINDOW": "30",
    }
    done = subprocess.run(
        manage_py("shell", "-c", script),
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    message = Message.objects.get(queue_id=done.stdout.split()[-1])
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    ours = [line for line in lines if line["logger"].startswith(DELIVERY_PATH)]
    assert sorted((line["logger"], line["level"]) for line in ours) == [
        ("delivery.accept", "INFO"),
        ("delivery.outcomes", "INFO"),
        ("delivery.outcomes", "WARNING"),
    ]
    for line in ours:
        assert_names_its_message(line, {message.pk: message})
        assert {"time", "level", "logger", "message"} <= line.keys()
    assert settings.SENDMSG_LOG_FORMAT == "plain"  # this test process: the default


def test_an_unknown_log_format_stops_the_process_with_a_clear_message():
    done = subprocess.run(
        manage_py("check"),
        env={**platform_env(), "SENDMSG_LOG_FORMAT": "xml"},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "SENDMSG_LOG_FORMAT must be plain or json, got 'xml'" in done.stderr
