"""The events API: filters that return exactly the right events, a cursor that walks every
event once while new ones arrive, exports of a time range as JSON lines and CSV, one event
shape everywhere, and nothing of another tenant's."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import time_machine
from rest_framework.test import APIClient

from delivery import queue_control
from delivery.accept import Sender, accept_message
from delivery.api.event_schema import EVENT_RELATED, EventSerializer
from delivery.credentials import create_api_key
from delivery.event_queries import walk
from delivery.models import Event, EventType, Message, Recipient, Source
from delivery.relay import deliver_message
from domains.models import Domain, DomainStatus, Tenant
from domains.tenancy import add_domain

pytestmark = pytest.mark.django_db

EVENTS = "/api/v1/events/"
EXPORT = "/api/v1/events/export/"
T0 = datetime(2030, 5, 1, 10, 0, tzinfo=UTC)


def api(key: str | None = None) -> APIClient:
    client = APIClient()
    if key is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


def verify(tenant: Tenant, name: str) -> Domain:
    domain = add_domain(tenant=tenant, name=name)
    Domain.objects.filter(pk=domain.pk).update(status=DomainStatus.VERIFIED)
    return domain


def send(tenant: Tenant, *recipients: str, sender: str = "news@acme.test", subject="Hi"):
    body = f"From: {sender}\r\nTo: {recipients[0]}\r\nSubject: {subject}\r\n\r\nHello.\r\n"
    return accept_message(
        sender=Sender(tenant_id=tenant.pk),
        mail_from=sender,
        recipients=list(recipients),
        raw=body.encode(),
        source=Source.API,
    )


def send_at(when: datetime, tenant: Tenant, *recipients: str, **kwargs) -> Message:
    with time_machine.travel(when, tick=False):
        return send(tenant, *recipients, **kwargs)


def cancel_at(when: datetime, message: Message) -> None:
    with time_machine.travel(when, tick=False):
        queue_control.apply(queue_control.Action.CANCEL, Recipient.objects.filter(message=message))


def error_of(response, status: int, code: str, field: str | None = None) -> dict:
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert error["code"] == code
    assert error.get("field") == field
    return error


def walk_pages(client: APIClient, **params) -> list[dict]:
    """Every event the list gives, following next to the end."""
    seen: list[dict] = []
    response = client.get(EVENTS, params)
    while True:
        assert response.status_code == 200, response.content
        body = response.json()
        seen += body["results"]
        if body["next"] is None:
            return seen
        response = client.get(body["next"])


def ids(client: APIClient, **params) -> list[int]:
    return [event["id"] for event in walk_pages(client, **params)]


def event_ids(**lookups) -> list[int]:
    return list(
        Event.objects.filter(**lookups).order_by("created_at", "id").values_list("pk", flat=True)
    )


def export(client: APIClient, **params):
    response = client.get(EXPORT, params)
    assert response.status_code == 200, response.content
    assert response.streaming
    return response, b"".join(response.streaming_content).decode()


@pytest.fixture
def acme(owner) -> Domain:
    return verify(owner[0], "acme.test")


@pytest.fixture
def client(owner, acme) -> APIClient:
    return api(create_api_key(tenant=owner[0])[1])


@pytest.fixture
def history(owner, acme):
    """Acme's mail over a few hours: two domains, several recipients, cancellations."""
    tenant = owner[0]
    verify(tenant, "news.acme.test")
    first = send_at(T0, tenant, "alice@dest.test", "Bob@dest.test")
    second = send_at(T0 + timedelta(hours=1), tenant, "bob@dest.test", sender="info@news.acme.test")
    third = send_at(T0 + timedelta(hours=2), tenant, "carol@dest.test")
    cancel_at(T0 + timedelta(hours=3), first)
    return {"first": first, "second": second, "third": third}


# -- the list --------------------------------------------------------------------------------


def test_without_a_key_both_endpoints_are_401(owner):
    for path in (EVENTS, EXPORT + "?since=2030-01-01T00:00:00Z"):
        response = api().get(path)
        error_of(response, 401, "unauthenticated")
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        error_of(api("sm_0000_nope").get(path), 401, "invalid_api_key")


def test_an_event_has_the_documented_shape(owner, client):
    message = send(owner[0], "alice@dest.test")
    [event] = client.get(EVENTS).json()["results"]
    recipient = Recipient.objects.get(message=message)
    assert event == {
        "id": Event.objects.get().pk,
        "type": "accepted",
        "created_at": event["created_at"],
        "message": {
            "id": message.queue_id,
            "message_id": message.message_id,
            "mail_from": "news@acme.test",
            "header_from": "news@acme.test",
            "subject": "Hi",
            "domain": "acme.test",
            "tags": [],
            "metadata": {},
        },
        "recipient": {"id": recipient.pk, "address": "alice@dest.test", "domain": "dest.test"},
        "reply": None,
    }
    assert datetime.fromisoformat(event["created_at"]) == message.created_at


def test_filters_return_exactly_the_matching_events(client, history):
    first, second, third = history["first"], history["second"], history["third"]
    bob = Recipient.objects.get(message=first, address="Bob@dest.test")

    assert ids(client) == event_ids()
    assert ids(client, type="cancelled") == event_ids(type="cancelled", message=first)
    assert len(ids(client, type="cancelled")) == 2
    both = event_ids(type__in=["accepted", "cancelled"])
    assert ids(client, type="accepted,cancelled") == both
    assert ids(client, type=["accepted", "cancelled"]) == both  # repeated parameter
    assert ids(client, message=second.queue_id) == event_ids(message=second)
    # an address matches in any letter case: Bob@ of the first message, bob@ of the second
    assert ids(client, recipient="BOB@dest.test") == event_ids(
        recipient__address__iexact="bob@dest.test"
    )
    assert len(ids(client, recipient="bob@dest.test")) == 3
    assert ids(client, recipient_id=bob.pk) == event_ids(recipient=bob)
    assert ids(client, recipient="bob@dest.test", recipient_id=bob.pk) == event_ids(recipient=bob)
    assert ids(client, domain="NEWS.acme.test.") == event_ids(message=second)
    assert ids(client, domain="acme.test") == event_ids(message__in=[first, third])
    assert ids(client, domain="other.test") == []
    assert ids(client, message="0000000000000000") == []


def test_since_is_inclusive_and_until_exclusive(client, history):
    hour = timedelta(hours=1)
    assert ids(client, since=(T0 + hour).isoformat()) == event_ids(created_at__gte=T0 + hour)
    assert ids(client, until=(T0 + hour).isoformat()) == event_ids(
        message=history["first"], type="accepted"
    )
    window = ids(client, since=(T0 + hour).isoformat(), until=(T0 + 2 * hour).isoformat())
    assert window == event_ids(message=history["second"])
    # naive timestamps are UTC; an offset counts; an unencoded "+" (a space) is read as meant
    assert ids(client, since="2030-05-01T11:00:00", until="2030-05-01 12:00") == window
    assert (
        ids(client, since="2030-05-01T13:00:00+02:00", until="2030-05-01T14:00:00+02:00") == window
    )
    query = "since=2030-05-01T13:00:00+02:00&until=2030-05-01T14:00:00+02:00"
    assert [e["id"] for e in client.get(f"{EVENTS}?{query}").json()["results"]] == window


def test_pages_walk_every_event_once_while_new_ones_arrive(owner, client):
    tenant = owner[0]
    gone = send(tenant, "old@dest.test")
    # five events with one timestamp: the cursor must split ties by id
    first = send(tenant, *(f"r{i}@dest.test" for i in range(5)))
    send(tenant, "s@dest.test")
    seen: list[int] = []
    response = client.get(EVENTS, {"limit": 2})
    pages = 0
    while True:
        body = response.json()
        assert len(body["results"]) <= 2
        seen += [event["id"] for event in body["results"]]
        pages += 1
        if pages == 1:
            send(tenant, "late1@dest.test", "late2@dest.test")  # arrive mid-walk
        if pages == 2:
            queue_control.apply(
                queue_control.Action.CANCEL, Recipient.objects.filter(message=first)
            )
            gone.delete()  # as retention would: a page seen already shrinks
        if body["next"] is None:
            break
        assert "limit=2" in body["next"]
        response = client.get(body["next"])
    # each exactly once, oldest first, the new ones at the end
    assert seen[0] not in event_ids() and seen[1:] == event_ids(tenant=tenant)
    assert len(seen) == 1 + 6 + 2 + 5


def test_a_cursor_follows_new_events_after_the_last_page(owner, client):
    tenant = owner[0]
    send(tenant, "a@dest.test")
    body = client.get(EVENTS).json()
    assert body["next"] is None and body["cursor"]
    again = client.get(EVENTS, {"cursor": body["cursor"]}).json()
    assert again["results"] == [] and again["cursor"] == body["cursor"]
    later = send(tenant, "b@dest.test")
    body = client.get(EVENTS, {"cursor": body["cursor"]}).json()
    assert [e["id"] for e in body["results"]] == event_ids(message=later)


def test_limit_is_capped(owner, client):
    message = send(owner[0], "a@dest.test")
    Event.objects.bulk_create(
        Event(tenant=owner[0], message=message, type=EventType.DEFERRED) for _ in range(510)
    )
    body = client.get(EVENTS, {"limit": 10_000}).json()
    assert len(body["results"]) == 500 and body["next"]
    assert len(client.get(EVENTS).json()["results"]) == 50


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"since": "yesterday"}, "since"),
        ({"until": "2030-13-01T00:00:00Z"}, "until"),
        ({"since": "2030-05-02T00:00:00Z", "until": "2030-05-01T00:00:00Z"}, "until"),
        ({"type": "opened"}, "type"),
        ({"type": "delivered,nope"}, "type"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": "MjAzMHww"}, "cursor"),  # base64 of "2030|0"
        ({"limit": "0"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"recipient_id": "x"}, "recipient_id"),
        ({"recipient_id": str(2**70)}, "recipient_id"),
        ({"domain": "no dots"}, "domain"),
    ],
)
def test_bad_filter_values_are_400(client, params, field):
    error = error_of(client.get(EVENTS, params), 400, "invalid_request", field)
    assert error["message"]


def test_unknown_type_names_the_vocabulary(client):
    error = error_of(client.get(EVENTS, {"type": "opened"}), 400, "invalid_request", "type")
    assert "'opened'" in error["message"] and "inbound_report" in error["message"]


# -- isolation -------------------------------------------------------------------------------


def test_another_tenants_events_never_appear(owner, outsider, client, history):
    verify(outsider[0], "globex.test")
    theirs = send(outsider[0], "alice@dest.test", sender="news@globex.test")
    _, outsider_key = create_api_key(tenant=outsider[0])
    them = api(outsider_key)

    assert ids(them) == event_ids(tenant=outsider[0]) and len(ids(them)) == 1
    assert ids(them, message=history["first"].queue_id) == []
    assert (
        ids(them, recipient_id=Recipient.objects.filter(message=history["first"]).first().pk) == []
    )
    assert ids(them, domain="acme.test") == []
    assert ids(client, message=theirs.queue_id) == []
    assert theirs.queue_id not in {e["message"]["id"] for e in walk_pages(client)}
    assert set(ids(client)) == set(event_ids(tenant=owner[0]))

    _, text = export(them, since="2000-01-01T00:00:00Z", format="jsonl")
    assert [json.loads(line)["id"] for line in text.splitlines()] == event_ids(tenant=outsider[0])
    _, text = export(them, since="2000-01-01T00:00:00Z", format="csv", recipient="alice@dest.test")
    assert [int(row["id"]) for row in csv.DictReader(io.StringIO(text))] == event_ids(
        tenant=outsider[0]
    )


# -- export ----------------------------------------------------------------------------------


def test_jsonl_export_holds_exactly_the_range_as_the_list_shows_it(client, history):
    since, until = T0 + timedelta(hours=1), T0 + timedelta(hours=3)
    response, text = export(
        client, since=since.isoformat(), until=until.isoformat(), format="jsonl"
    )
    assert response["Content-Type"].startswith("application/x-ndjson")
    assert 'filename="events.jsonl"' in response["Content-Disposition"]
    lines = [json.loads(line) for line in text.splitlines()]
    expected = event_ids(created_at__gte=since, created_at__lt=until)
    assert [line["id"] for line in lines] == expected
    assert {line["message"]["id"] for line in lines} == {
        history["second"].queue_id,
        history["third"].queue_id,
    }
    listed = walk_pages(client, since=since.isoformat(), until=until.isoformat())
    assert lines == listed  # the same shape, field for field
    # the cancellations at the end of the range are out: until is exclusive
    assert "cancelled" not in {line["type"] for line in lines}
    # jsonl by default, until now: what is written while it streams is not part of it
    with time_machine.travel(T0 + timedelta(hours=5), tick=False):
        response = client.get(EXPORT, {"since": T0.isoformat()})
        later = send(history["first"].tenant, "dave@dest.test")
    with time_machine.travel(T0 + timedelta(hours=6), tick=False):
        everything = b"".join(response.streaming_content).decode()
    assert [json.loads(line)["id"] for line in everything.splitlines()] == event_ids(
        created_at__lt=later.created_at
    )


def test_csv_export_holds_exactly_the_range_in_flat_columns(owner, client, history):
    since, until = T0, T0 + timedelta(hours=2)
    response, text = export(
        client, since=since.isoformat(), until=until.isoformat(), format="csv", type="accepted"
    )
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    expected = Event.objects.filter(
        created_at__gte=since, created_at__lt=until, type="accepted"
    ).select_related(*EVENT_RELATED)
    assert [int(row["id"]) for row in rows] == [e.pk for e in expected]
    assert text.splitlines()[0].split(",") == [
        "id",
        "type",
        "created_at",
        "message.id",
        "message.message_id",
        "message.mail_from",
        "message.header_from",
        "message.subject",
        "message.domain",
        "message.tags",
        "message.metadata",
        "recipient.id",
        "recipient.address",
        "recipient.domain",
        "reply.code",
        "reply.enhanced",
        "reply.text",
        "reply.mx_host",
        "reply.bounce_class",
        "reply.reason",
    ]
    for row, event in zip(rows, expected, strict=True):
        data = EventSerializer(event).data
        assert row["type"] == "accepted"
        assert row["created_at"] == data["created_at"]
        assert row["message.id"] == event.message.queue_id
        assert row["message.domain"] == event.message.domain.name
        assert json.loads(row["message.tags"]) == []
        assert row["recipient.id"] == str(event.recipient_id)
        assert row["recipient.address"] == event.recipient.address
        assert row["reply.code"] == ""  # no reply: empty cells


def test_csv_cells_never_become_spreadsheet_formulas(owner, client):
    send(owner[0], "a@dest.test", subject='=HYPERLINK("http://evil.test")')
    _, text = export(client, since="2000-01-01T00:00:00Z", format="csv")
    [row] = csv.DictReader(io.StringIO(text))
    assert row["message.subject"] == '\'=HYPERLINK("http://evil.test")'
    _, text = export(client, since="2000-01-01T00:00:00Z", format="jsonl")
    assert json.loads(text)["message"]["subject"] == '=HYPERLINK("http://evil.test")'


def test_an_export_walks_in_chunks_across_tied_timestamps(owner, acme):
    # chunks of 2 over five events that share one timestamp: none lost, none twice
    send(owner[0], *(f"r{i}@dest.test" for i in range(5)))
    send(owner[0], "s@dest.test")
    chunks = list(walk(Event.objects.filter(tenant=owner[0]), chunk=2))
    assert [len(chunk) for chunk in chunks] == [2, 2, 2]
    assert [e.pk for chunk in chunks for e in chunk] == event_ids()


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({}, "since"),
        ({"since": "2030-05"}, "since"),
        ({"since": "2030-05-01T00:00:00Z", "format": "xml"}, "format"),
        ({"since": "2030-05-01T00:00:00Z", "until": "2030-04-01T00:00:00Z"}, "until"),
        ({"since": "2030-05-01T00:00:00Z", "type": "open"}, "type"),
    ],
)
def test_bad_export_requests_are_400_as_json(client, params, field):
    response = client.get(EXPORT, params)
    assert response["Content-Type"] == "application/json"
    error_of(response, 400, "invalid_request", field)


# -- events of a real delivery ---------------------------------------------------------------


def test_relay_outcomes_are_events_with_the_remote_reply(owner, verified_domain, mx):
    mx.reply_rcpt("nobody@dest.test", "550 5.1.1 No such user")
    message = send(owner[0], "alice@dest.test", "nobody@dest.test")
    assert deliver_message(message.pk) == 2
    client = api(create_api_key(tenant=owner[0])[1])

    [bounce] = walk_pages(client, type="bounced")
    assert bounce["recipient"]["address"] == "nobody@dest.test"
    assert bounce["reply"]["code"] == 550 and bounce["reply"]["enhanced"] == "5.1.1"
    assert "No such user" in bounce["reply"]["text"]
    assert bounce["reply"]["mx_host"] == "mx.dest.test"
    outcomes = walk_pages(client, type="delivered,bounced", message=message.queue_id)
    assert {(e["type"], e["recipient"]["address"]) for e in outcomes} == {
        ("delivered", "alice@dest.test"),
        ("bounced", "nobody@dest.test"),
    }
    _, text = export(client, since="2000-01-01T00:00:00Z", format="csv", type="bounced")
    [row] = csv.DictReader(io.StringIO(text))
    assert (row["reply.code"], row["reply.enhanced"]) == ("550", "5.1.1")


# -- schema ----------------------------------------------------------------------------------


def test_schema_documents_the_endpoints_and_the_event():
    schema = APIClient().get("/api/v1/schema/?format=json").json()
    listed = schema["paths"][EVENTS]["get"]
    names = {p["name"] for p in listed["parameters"]}
    assert {"type", "message", "recipient", "recipient_id", "domain", "since", "until"} <= names
    assert {"cursor", "limit"} <= names
    page = listed["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert page.endswith("/EventPage")
    exported = schema["paths"][EXPORT]["get"]
    assert {"format", "since", "until", "type"} <= {p["name"] for p in exported["parameters"]}
    assert {"application/x-ndjson", "text/csv"} <= set(exported["responses"]["200"]["content"])
    assert set(exported["responses"]) >= {"200", "400", "401"}

    components = schema["components"]["schemas"]
    event = components["Event"]["properties"]
    assert set(event) == {"id", "type", "created_at", "message", "recipient", "reply"}
    assert set(components["EventTypeEnum"]["enum"]) == set(EventType.values)
    assert {"id", "address", "domain"} <= set(components["EventRecipient"]["properties"])
    assert {"code", "enhanced", "text", "mx_host"} <= set(components["EventReply"]["properties"])


def test_readme_names_every_event_type():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("### Events API", 1)[1].split("\n## ", 1)[0]
    for value in EventType.values:
        assert f"`{value}`" in section, value
