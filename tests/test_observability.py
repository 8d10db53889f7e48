"""Liveness, readiness and metrics: what an orchestrator and Prometheus see."""

from __future__ import annotations

import re
import smtplib

import pytest
from django.core.management.base import CommandError
from django.test import override_settings

from delivery.models import Event, EventType, Message, Recipient, RecipientState, Source
from domains.tenancy import add_domain
from tests.conftest import run_command, wait_until


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one metric line in Prometheus' text format."""
    label_text = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = "^" + re.escape(f"{name}{{{label_text}}}" if labels else name) + r" (\S+)$"
    match = re.search(pattern, text, re.MULTILINE)
    assert match, f"{name} {labels} not in:\n{text}"
    return float(match.group(1))


def test_liveness_and_readiness(client, db):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ok"}


def test_readiness_fails_while_the_database_is_unreachable(client, db, monkeypatch):
    from django.db import DatabaseError, connections

    def broken(*args, **kwargs):
        raise DatabaseError("connection refused")

    # The database connection is outside our code: make it refuse, as a stopped server does.
    with monkeypatch.context() as patch:
        patch.setattr(connections["default"], "cursor", broken)
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["problems"] == ["database unavailable: DatabaseError"]


def test_metrics_count_recent_events_and_the_queue(client, owner):
    tenant = owner[0]
    message = Message.objects.create(
        tenant=tenant,
        domain=add_domain(tenant=tenant, name="acme.test"),
        queue_id="OBS1",
        source=Source.API,
        mail_from="a@acme.test",
        header_from="a@acme.test",
        raw=b"Subject: x\r\n\r\nx\r\n",
        size=20,
    )
    states = [RecipientState.QUEUED, RecipientState.QUEUED, RecipientState.DEFERRED]
    for n, state in enumerate(states):
        recipient = Recipient.objects.create(
            message=message,
            tenant=tenant,
            address=f"r{n}@dest.test",
            domain="dest.test",
            state=state,
        )
        Event.objects.create(
            tenant=tenant, message=message, recipient=recipient, type=EventType.ACCEPTED
        )
    Event.objects.create(tenant=tenant, message=message, recipient=recipient, type="deferred")

    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    text = response.content.decode()
    assert sample(text, "sendmsg_events_last_minute", type="accepted") == 3
    assert sample(text, "sendmsg_events_last_minute", type="deferred") == 1
    assert sample(text, "sendmsg_events_last_minute", type="delivered") == 0
    assert sample(text, "sendmsg_queue_recipients", state="queued") == 2
    assert sample(text, "sendmsg_queue_recipients", state="deferred") == 1
    assert sample(text, "sendmsg_queue_oldest_seconds") >= 0
    assert sample(text, "sendmsg_webhook_deliveries", state="failed") == 0


def test_metrics_are_refused_to_other_clients_unless_they_send_the_token(client, db):
    assert client.get("/metrics", REMOTE_ADDR="203.0.113.9").status_code == 403
    with override_settings(SENDMSG_METRICS_TOKEN="s3cret-token"):
        assert client.get("/metrics").status_code == 403  # loopback is not enough then
        wrong = client.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 403
        right = client.get(
            "/metrics", REMOTE_ADDR="203.0.113.9", headers={"Authorization": "Bearer s3cret-token"}
        )
        assert right.status_code == 200


@pytest.mark.django_db(transaction=True)
def test_smtp_sessions_and_process_health(platform, client):
    from django.conf import settings

    with smtplib.SMTP("127.0.0.1", settings.SENDMSG_SUBMISSION_PORT, timeout=10) as smtp:
        smtp.ehlo("observer.test")

        def one_open() -> bool:
            text = client.get("/metrics").content.decode()
            return sample(text, "sendmsg_smtp_sessions", listener="submission") >= 1

        wait_until(one_open, timeout=20)
        assert "submission" in run_command("health", "smtp")

    def workers_alive() -> bool:
        # The cluster reports itself every guard cycle, with a short expiry: under load a
        # report can lapse for a moment, as a probe's retries allow for.
        try:
            return run_command("health", "workers").startswith("workers alive")
        except CommandError:
            return False

    wait_until(workers_alive, timeout=20)


def test_health_of_a_process_that_is_not_running_fails(db, settings, tmp_path):
    settings.DATA_DIR = tmp_path  # no SMTP process ever wrote a status here
    with pytest.raises(CommandError, match="no SMTP process"):
        run_command("health", "smtp")
    settings.SENDMSG_WEB_PORT = 9  # discard: nothing answers HTTP there
    with pytest.raises(CommandError, match="web not ready"):
        run_command("health", "web")


@pytest.mark.django_db(transaction=True)
def test_health_of_the_running_web_process(live_server, settings):
    from urllib.parse import urlsplit

    settings.SENDMSG_WEB_PORT = urlsplit(live_server.url).port
    assert run_command("health", "web").startswith("web ready (200)")
