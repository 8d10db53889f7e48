"""What the platform is doing, in Prometheus' text format (version 0.0.4).

Read from the database on each scrape with a fixed number of indexed queries, so every
web process answers the same figures and a scrape costs the same at any volume:

- ``sendmsg_events_last_minute{type}``: events recorded in the last 60 s (accepted,
  delivered, deferred, bounced, complained, …), from the index on ``Event.created_at``;
- ``sendmsg_queue_recipients{state}`` and ``sendmsg_queue_oldest_seconds``: recipients not
  final yet, and how long the oldest due one has waited past its attempt time;
- ``sendmsg_webhook_deliveries{state}``: webhook deliveries pending, being sent, failed;
- ``sendmsg_smtp_sessions``: SMTP sessions open now, from the SMTP processes' status file.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta

from django.db.models import Count, Min
from django.utils import timezone

from delivery.models import (
    Event,
    EventType,
    Recipient,
    RecipientState,
    WebhookDelivery,
    WebhookDeliveryState,
)
from sendmsg import smtp_status

WAITING_STATES = [
    RecipientState.QUEUED,
    RecipientState.DEFERRED,
    RecipientState.SENDING,
    RecipientState.HELD,
]


@dataclass
class Metric:
    name: str
    kind: str  # "gauge" or "counter"
    help: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)


def collect() -> list[Metric]:
    now = timezone.now()
    events = Metric(
        "sendmsg_events_last_minute", "gauge", "Events recorded in the last 60 seconds."
    )
    recent = dict(
        Event.objects.filter(created_at__gte=now - timedelta(seconds=60))
        .values_list("type")
        .annotate(n=Count("id"))
        .order_by()
    )
    for value in EventType.values:
        events.samples.append(({"type": value}, recent.get(value, 0)))

    queue = Metric(
        "sendmsg_queue_recipients", "gauge", "Recipients not delivered, bounced or dropped yet."
    )
    waiting = dict(
        Recipient.objects.filter(state__in=WAITING_STATES)
        .values_list("state")
        .annotate(n=Count("id"))
        .order_by()
    )
    for state in WAITING_STATES:
        queue.samples.append(({"state": state.value}, waiting.get(state, 0)))

    oldest = Metric(
        "sendmsg_queue_oldest_seconds",
        "gauge",
        "How long the most overdue queued or deferred recipient has waited past its attempt time.",
    )
    due = Recipient.objects.filter(
        state__in=[RecipientState.QUEUED, RecipientState.DEFERRED], next_attempt_at__lte=now
    ).aggregate(first=Min("next_attempt_at"))["first"]
    oldest.samples.append(({}, (now - due).total_seconds() if due else 0.0))

    hooks = Metric(
        "sendmsg_webhook_deliveries", "gauge", "Webhook deliveries waiting, being sent or failed."
    )
    shown = [
        WebhookDeliveryState.PENDING,
        WebhookDeliveryState.SENDING,
        WebhookDeliveryState.FAILED,
    ]
    counted = dict(
        WebhookDelivery.objects.filter(state__in=shown)
        .values_list("state")
        .annotate(n=Count("id"))
        .order_by()
    )
    for state in shown:
        hooks.samples.append(({"state": state.value}, counted.get(state, 0)))

    sessions = Metric("sendmsg_smtp_sessions", "gauge", "SMTP sessions open now, per listener.")
    for listener, count in smtp_status.open_sessions().items():
        sessions.samples.append(({"listener": listener}, count))
    return [events, queue, oldest, hooks, sessions]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render(metrics: Iterable[Metric]) -> str:
    lines = []
    for metric in metrics:
        lines.append(f"# HELP {metric.name} {metric.help}")
        lines.append(f"# TYPE {metric.name} {metric.kind}")
        for labels, value in metric.samples:
            label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            name = f"{metric.name}{{{label_text}}}" if label_text else metric.name
            number = int(value) if float(value).is_integer() else round(value, 3)
            lines.append(f"{name} {number}")
    return "\n".join(lines) + "\n"
