"""The message log (API and dashboard) and its retention: filters, one message's
recipients, attempts, timeline and headers (never the body), tenant isolation, and the
scheduled cleanup with time moved back by dating messages in the past."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from html import unescape
from urllib.parse import urlencode

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_q.models import Schedule
from rest_framework.test import APIClient

from delivery import retention
from delivery.accept import Sender, accept_message
from delivery.credentials import create_api_key
from delivery.message_log import headers_of, message_for
from delivery.models import Event, EventType, Message, Recipient, RecipientState, Source
from delivery.replies import SmtpReply
from domains.models import Domain, DomainStatus, Tenant
from domains.tenancy import add_domain
from reputation.models import InboundReport
from sendmsg.checks import retention_days

pytestmark = pytest.mark.django_db

S = RecipientState
BODY = b"SECRET-BODY-TEXT do not show\r\n"
LIST = "/api/v1/messages/"


# -- helpers ---------------------------------------------------------------------------------


def verify(tenant: Tenant, name: str) -> Domain:
    domain = add_domain(tenant=tenant, name=name)
    Domain.objects.filter(pk=domain.pk).update(status=DomainStatus.VERIFIED)
    return domain


@pytest.fixture
def acme(owner) -> Domain:
    return verify(owner[0], "acme.test")


def send(
    tenant: Tenant,
    *recipients: str,
    sender: str = "news@acme.test",
    subject: str = "hi",
    tags: list[str] | None = None,
    days_ago: float = 0,
    extra_headers: bytes = b"",
    body: bytes = BODY,
) -> Message:
    raw = (
        f"From: {sender}\r\nTo: {', '.join(recipients)}\r\nSubject: {subject}\r\n".encode()
        + extra_headers
        + b"\r\n"
        + body
    )
    message = accept_message(
        sender=Sender(tenant_id=tenant.pk),
        mail_from=sender,
        recipients=list(recipients),
        raw=raw,
        source=Source.API,
        tags=tags,
    )
    if days_ago:
        age(message, days=days_ago)
    return message


def age(message: Message, *, days: float) -> None:
    """Move a message (and its events) back in time."""
    then = timezone.now() - timedelta(days=days)
    Message.objects.filter(pk=message.pk).update(created_at=then)
    Event.objects.filter(message=message).update(created_at=then)
    message.refresh_from_db()


def attempt(
    message: Message,
    address: str,
    state: RecipientState,
    event: EventType,
    reply: SmtpReply,
    mx_host: str = "mx.dest.test",
) -> Recipient:
    """Record an attempt's outcome as the relay does (Recipient.finish)."""
    recipient = Recipient.objects.get(message=message, address=address)
    Recipient.objects.filter(pk=recipient.pk).update(
        state=S.SENDING, lease_token="t", lease_until=timezone.now() + timedelta(minutes=5)
    )
    assert recipient.finish(state=state, reply=reply, lease_token="t", event=event, mx_host=mx_host)
    return recipient


def finish_all(message: Message, state: RecipientState = S.DELIVERED) -> None:
    Recipient.objects.filter(message=message).update(state=state)


def api(tenant: Tenant) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {create_api_key(tenant=tenant)[1]}")
    return client


def ids(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [row["queue_id"] for row in response.json()["results"]]


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


DEFERRED = SmtpReply(451, "4.7.1", "Greylisted, try again later")
DELIVERED = SmtpReply(250, "2.0.0", "Ok: queued as ABC123")
BOUNCED = SmtpReply(550, "5.1.1", "No such user here")


@pytest.fixture
def log(owner, acme):
    """Four messages of Acme's, newest first: [news, alert, receipt, old]."""
    tenant = owner[0]
    verify(tenant, "shop.acme-mail.test")
    old = send(tenant, "zed@dest.test", tags=["news"], days_ago=10)
    receipt = send(
        tenant,
        "Bob@Dest.test",
        "carol@other.test",
        sender="orders@shop.acme-mail.test",
        subject="Your receipt",
        tags=["receipt", "shop"],
        days_ago=3,
    )
    alert = send(tenant, "alice@dest.test", subject="Alert", tags=["newsletter"], days_ago=1)
    news = send(tenant, "alice@dest.test", "bob@dest.test", tags=["news"])
    attempt(receipt, "Bob@Dest.test", S.BOUNCED, EventType.BOUNCED, BOUNCED)
    attempt(receipt, "carol@other.test", S.DELIVERED, EventType.DELIVERED, DELIVERED)
    attempt(news, "alice@dest.test", S.DEFERRED, EventType.DEFERRED, DEFERRED)
    return {"news": news, "alert": alert, "receipt": receipt, "old": old}


# -- API: list and filters -------------------------------------------------------------------


def test_list_is_newest_first_light_and_paginated(owner, log):
    client = api(owner[0])
    body = client.get(LIST).json()
    assert [row["queue_id"] for row in body["results"]] == [
        log[name].queue_id for name in ("news", "alert", "receipt", "old")
    ]
    first = body["results"][0]
    assert first["sender_domain"] == "acme.test" and first["tags"] == ["news"]
    assert first["body_removed_at"] is None
    assert [r["address"] for r in first["recipients"]] == ["alice@dest.test", "bob@dest.test"]
    assert first["recipients"][0]["state"] == "deferred"
    assert first["recipients"][0]["last_code"] == 451
    # Light: no events, no headers, no body.
    assert "events" not in first["recipients"][0]
    assert "headers" not in first and "timeline" not in first
    assert b"SECRET-BODY" not in client.get(LIST).content

    page = client.get(LIST, {"limit": 2}).json()
    assert page["count"] == 4 and len(page["results"]) == 2 and page["next"]
    rest = client.get(page["next"]).json()
    assert [row["queue_id"] for row in rest["results"]] == [
        log["receipt"].queue_id,
        log["old"].queue_id,
    ]


@pytest.mark.parametrize(
    "query, expected",
    [
        ({"status": "deferred"}, ["news"]),
        ({"status": "bounced"}, ["receipt"]),
        # A message matches when any recipient has the state.
        ({"status": "delivered"}, ["receipt"]),
        ({"status": "queued"}, ["news", "alert", "old"]),
        ({"recipient": "bob@dest.test"}, ["news", "receipt"]),  # any case
        ({"recipient": "ALICE@dest.test"}, ["news", "alert"]),
        ({"recipient": "alice"}, []),  # exact means the whole address
        ({"recipient_contains": "other.test"}, ["receipt"]),
        ({"recipient_contains": "ZED"}, ["old"]),
        # status and recipient apply to the same recipient
        ({"status": "queued", "recipient": "bob@dest.test"}, ["news"]),
        ({"status": "bounced", "recipient": "bob@dest.test"}, ["receipt"]),
        ({"status": "deferred", "recipient": "bob@dest.test"}, []),
        ({"sender_domain": "shop.acme-mail.test"}, ["receipt"]),
        ({"sender_domain": "ACME.test."}, ["news", "alert", "old"]),
        ({"tag": "news"}, ["news", "old"]),  # whole tags: not "newsletter"
        ({"tag": "shop"}, ["receipt"]),
        ({"tag": "new"}, []),
        ({"tag": "news", "recipient": "zed@dest.test"}, ["old"]),
    ],
)
def test_filters(owner, log, query, expected):
    assert ids(api(owner[0]).get(LIST, query)) == [log[name].queue_id for name in expected]


def test_date_range(owner, log):
    client = api(owner[0])
    now = timezone.now()
    since = (now - timedelta(days=2)).isoformat()
    assert ids(client.get(LIST, {"since": since})) == [
        log["news"].queue_id,
        log["alert"].queue_id,
    ]
    until = (now - timedelta(days=2)).isoformat()
    assert ids(client.get(LIST, {"until": until})) == [
        log["receipt"].queue_id,
        log["old"].queue_id,
    ]
    # A bare date: since is the start of that day, until includes the whole day.
    day = log["receipt"].created_at.date().isoformat()
    assert ids(client.get(LIST, {"since": day, "until": day})) == [log["receipt"].queue_id]
    # A time with an offset is that instant; since is inclusive, until exclusive.
    exact = log["alert"].created_at.astimezone(timezone.get_fixed_timezone(120))
    assert ids(client.get(LIST, {"since": exact.isoformat()}))[-1] == log["alert"].queue_id
    assert log["alert"].queue_id not in ids(client.get(LIST, {"until": exact.isoformat()}))
    after = (exact + timedelta(microseconds=1)).isoformat()
    assert ids(client.get(LIST, {"since": exact.isoformat(), "until": after})) == [
        log["alert"].queue_id
    ]


@pytest.mark.parametrize(
    "query, field",
    [
        ({"status": "lost"}, "status"),
        ({"since": "yesterday"}, "since"),
        ({"until": "2025-13-01"}, "until"),
        ({"sender_domain": "nodot"}, "sender_domain"),
        ({"since": "2025-02-01", "until": "2025-01-01"}, "until"),
    ],
)
def test_invalid_filters_are_400_naming_the_field(owner, acme, query, field):
    response = api(owner[0]).get(LIST, query)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_request" and error["field"] == field


def test_outsider_sees_none_of_it_through_the_api(owner, outsider, log):
    client = api(outsider[0])
    assert ids(client.get(LIST)) == []
    assert ids(client.get(LIST, {"recipient": "alice@dest.test"})) == []
    assert ids(client.get(LIST, {"sender_domain": "acme.test"})) == []
    response = client.get(f"{LIST}{log['news'].queue_id}/")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_schema_documents_the_filters_and_both_shapes():
    schema = APIClient().get("/api/v1/schema/", {"format": "json"}).json()
    list_op = schema["paths"]["/api/v1/messages/"]["get"]
    names = {p["name"] for p in list_op["parameters"]}
    assert {
        "status",
        "recipient",
        "recipient_contains",
        "sender_domain",
        "tag",
        "since",
        "until",
        "limit",
        "offset",
    } <= names
    status = next(p for p in list_op["parameters"] if p["name"] == "status")
    assert "held" in status["schema"]["enum"]
    components = schema["components"]["schemas"]
    assert "events" not in components["RecipientSummary"]["properties"]
    detail = components["MessageDetail"]["properties"]
    assert {"recipients", "timeline", "headers", "body_removed_at"} <= set(detail)
    assert "raw" not in detail and "body" not in detail


# -- API: one message ------------------------------------------------------------------------


def test_detail_has_recipients_attempts_timeline_and_headers_but_no_body(owner, log):
    receipt = log["receipt"]
    # A later bounce report for the delivered recipient counts among its attempts.
    carol = Recipient.objects.get(message=receipt, address="carol@other.test")
    Event.record(recipient=carol, type=EventType.BOUNCED, reply=BOUNCED)
    response = api(owner[0]).get(f"{LIST}{receipt.queue_id}/")
    assert response.status_code == 200
    assert b"SECRET-BODY" not in response.content
    body = response.json()
    assert body["queue_id"] == receipt.queue_id and body["subject"] == "Your receipt"
    assert body["sender_domain"] == "shop.acme-mail.test"
    assert body["tags"] == ["receipt", "shop"] and body["body_removed_at"] is None

    bob, carol_row = body["recipients"]
    assert bob["address"] == "Bob@Dest.test" and bob["state"] == "bounced"
    assert [e["type"] for e in bob["events"]] == ["accepted", "bounced"]
    assert bob["attempt_history"] == [
        {
            "type": "bounced",
            "created_at": bob["events"][1]["created_at"],
            "code": 550,
            "enhanced": "5.1.1",
            "text": "No such user here",
            "mx_host": "mx.dest.test",
        }
    ]
    assert [(a["type"], a["code"], a["mx_host"]) for a in carol_row["attempt_history"]] == [
        ("delivered", 250, "mx.dest.test"),
        ("bounced", 550, ""),
    ]

    timeline = body["timeline"]
    assert [(e["type"], e["recipient"]) for e in timeline] == [
        ("accepted", "Bob@Dest.test"),
        ("accepted", "carol@other.test"),
        ("bounced", "Bob@Dest.test"),
        ("delivered", "carol@other.test"),
        ("bounced", "carol@other.test"),
    ]
    assert timeline[2]["code"] == 550 and timeline[2]["description"].startswith("Bounced")
    stamps = [e["created_at"] for e in timeline]
    assert stamps == sorted(stamps)

    headers = body["headers"]
    assert headers["truncated"] is False
    # The section as stored (accept added its tracking header, Date and Message-ID on
    # top), nothing after it.
    stored = bytes(Message.objects.get(pk=receipt.pk).raw)
    assert headers["raw"] == stored[: stored.index(b"\r\n\r\n")].decode()
    assert headers["raw"].endswith("\r\nSubject: Your receipt")
    assert [f["name"] for f in headers["parsed"]] == [
        "Sendmsg-Ref",
        "Date",
        "Message-ID",
        "From",
        "To",
        "Subject",
    ]
    assert headers["parsed"][4] == {"name": "To", "value": "Bob@Dest.test, carol@other.test"}


def test_neither_list_nor_detail_reads_message_bodies(owner, log, django_assert_max_num_queries):
    client = api(owner[0])
    for url in (LIST, f"{LIST}{log['receipt'].queue_id}/"):
        with CaptureQueriesContext(connection) as queries:
            assert client.get(url).status_code == 200
        for query in queries.captured_queries:
            # Only the detail reads raw, and only its start: SUBSTR(raw, 1, limit).
            sql = query["sql"].replace('SUBSTR("delivery_message"."raw"', "SUBSTR(")
            sql = sql.replace('SUBSTRING("delivery_message"."raw"', "SUBSTRING(")
            assert '"delivery_message"."raw"' not in sql, sql
    # A constant number of queries whatever the number of messages, recipients, events.
    for _ in range(5):
        send(owner[0], "x@dest.test", "y@dest.test")
    with django_assert_max_num_queries(8):
        client.get(LIST)


def test_headers_are_decoded_safely_and_unfolded(owner, acme):
    message = send(
        owner[0],
        "a@dest.test",
        extra_headers=(
            b"X-Long: first part\r\n\tsecond part\r\n"
            b"X-Utf8: caf\xc3\xa9\r\n"
            b"X-Latin1: caf\xe9\r\n"
            b"X-Control: a\x00b\x1bc\r\n"
            b"X-Markup: <script>alert(1)</script>\r\n"
        ),
    )
    body = api(owner[0]).get(f"{LIST}{message.queue_id}/").json()
    fields = {f["name"]: f["value"] for f in body["headers"]["parsed"]}
    assert fields["X-Long"] == "first part\tsecond part"
    assert fields["X-Utf8"] == "café"
    assert fields["X-Latin1"] == "caf\ufffd"
    assert fields["X-Control"] == "a\ufffdb\ufffdc"
    assert "X-Long: first part\r\n\tsecond part" in body["headers"]["raw"]
    assert "SECRET-BODY" not in json.dumps(body)

    page = logged_in(owner[1]).get(f"/messages/{message.queue_id}/")
    assert b"&lt;script&gt;alert(1)&lt;/script&gt;" in page.content
    assert b"<script>alert(1)" not in page.content
    assert b"\x00" not in page.content


def test_a_header_section_past_the_read_limit_is_cut_and_said_so(owner, acme):
    from delivery.message_log import HEADER_READ_LIMIT

    filler = b"".join(b"X-Filler-%06d: %s\r\n" % (i, b"y" * 60) for i in range(4000))
    assert len(filler) > HEADER_READ_LIMIT
    message = send(owner[0], "a@dest.test", extra_headers=filler)
    headers = api(owner[0]).get(f"{LIST}{message.queue_id}/").json()["headers"]
    assert headers["truncated"] is True
    assert len(headers["raw"].encode()) <= HEADER_READ_LIMIT
    assert headers["parsed"][-1]["name"].startswith("X-Filler-")
    assert len(headers["parsed"][-1]["value"]) == 60  # cut at a line end, not mid-field


def test_cancel_and_the_old_detail_fields_still_work(owner, acme):
    message = send(owner[0], "a@dest.test")
    client = api(owner[0])
    body = client.get(f"{LIST}{message.queue_id}/").json()
    for field in ("id", "source", "mail_from", "header_from", "message_id", "size"):
        assert field in body
    assert client.post(f"{LIST}{message.queue_id}/cancel/").status_code == 200
    assert ids(client.get(LIST, {"status": "cancelled"})) == [message.queue_id]


# -- dashboard -------------------------------------------------------------------------------


def test_dashboard_lists_with_the_same_filters(owner, log):
    client = logged_in(owner[1])
    page = client.get("/messages/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'href="/messages/"' in client.get("/").content.decode()  # in the nav
    for name in ("news", "alert", "receipt", "old"):
        assert f'data-queue-id="{log[name].queue_id}"' in html
    assert html.index(log["news"].queue_id) < html.index(log["old"].queue_id)

    html = client.get("/messages/", {"status": "bounced"}).content.decode()
    assert log["receipt"].queue_id in html and log["news"].queue_id not in html
    html = client.get(
        "/messages/", {"recipient_contains": "alice", "tag": "newsletter"}
    ).content.decode()
    assert log["alert"].queue_id in html and log["news"].queue_id not in html
    assert 'value="newsletter"' in html  # the form keeps what was asked
    day = log["receipt"].created_at.date().isoformat()
    html = client.get("/messages/", {"since": day, "until": day}).content.decode()
    assert f'data-queue-id="{log["receipt"].queue_id}"' in html
    assert f'data-queue-id="{log["alert"].queue_id}"' not in html

    html = client.get("/messages/", {"tag": "nothing-has-this"}).content.decode()
    assert "No message matches these filters" in html


def test_dashboard_shows_a_bad_filter_and_no_list(owner, log):
    page = logged_in(owner[1]).get("/messages/", {"since": "last tuesday"})
    assert page.status_code == 200
    html = page.content.decode()
    assert 'aria-invalid="true"' in html and "Enter a date" in html
    assert "data-queue-id" not in html


def test_dashboard_pages_keep_the_filters(owner, acme):
    for n in range(55):
        send(owner[0], f"user{n}@dest.test", tags=["bulk"], days_ago=n / 1000)
    send(owner[0], "other@dest.test")
    client = logged_in(owner[1])
    html = client.get("/messages/", {"tag": "bulk"}).content.decode()
    assert html.count("data-queue-id=") == 50 and "Newer" not in html
    older = pager_links(html)["next"]
    assert older.startswith(f"?{urlencode({'tag': 'bulk'})}&before=")
    html = client.get(f"/messages/{older}").content.decode()
    assert html.count("data-queue-id=") == 5 and "other@dest.test" not in html
    assert set(pager_links(html)) == {"prev"}  # the last page: Newer only


# -- dashboard: pages from a message (keyset) -------------------------------------------------

PAGER = re.compile(r'<a class="button" rel="(prev|next)" href="([^"]+)"')


def pager_links(html: str) -> dict[str, str]:
    """The page's Newer (prev) and Older (next) links, unescaped."""
    return {rel: unescape(href) for rel, href in PAGER.findall(html)}


def listed_ids(html: str) -> list[str]:
    return re.findall(r'<tr data-queue-id="([^"]+)"', html)


def walk(client: Client, url: str, rel: str, limit: int = 50) -> list[list[str]]:
    """The queue ids of each page, following ``rel`` links from ``url`` (bounded)."""
    pages = []
    for _ in range(limit):
        html = client.get(url).content.decode()
        pages.append(listed_ids(html))
        link = pager_links(html).get(rel)
        if link is None:
            return pages
        url = f"/messages/{link}"
    raise AssertionError("more pages than expected")


@pytest.fixture
def many(owner, acme) -> list[Message]:
    """130 messages, newest first as the log lists them: many share one time (only the
    id orders them), and ids do not follow time (some are aged, some are not)."""
    tenant = owner[0]
    messages = [
        send(tenant, f"r{n}@dest.test", tags=["odd" if n % 2 else "even"]) for n in range(130)
    ]
    stamp = timezone.now() - timedelta(hours=1)
    for n, message in enumerate(messages):
        # Groups of 7 equal times; every third group older than the rest.
        when = stamp - timedelta(minutes=n // 7 + (100 if (n // 7) % 3 == 0 else 0))
        Message.objects.filter(pk=message.pk).update(created_at=when)
    return list(Message.objects.filter(tenant=tenant).order_by("-created_at", "-pk"))


def test_pages_walk_older_then_newer_without_gaps_or_repeats(owner, many):
    client = logged_in(owner[1])
    expected = [m.queue_id for m in many]
    older = walk(client, "/messages/", "next")
    assert [len(page) for page in older] == [50, 50, 30]
    assert sum(older, []) == expected  # in order, each once
    # Back up from the last page with Newer: the same pages, the first one full.
    html = client.get("/messages/").content.decode()
    last = f"/messages/{pager_links(html)['next']}"
    html = client.get(last).content.decode()
    last = f"/messages/{pager_links(html)['next']}"
    newer = walk(client, last, "prev")
    assert newer == older[::-1]
    # The count is shown only when every match is on the page.
    assert "(130)" not in client.get("/messages/").content.decode()


def test_pages_keep_filters_and_a_whole_result_shows_its_count(owner, many):
    client = logged_in(owner[1])
    odd = [m.queue_id for m in many if m.tags == ["odd"]]
    pages = walk(client, "/messages/?tag=odd", "next")
    assert [len(page) for page in pages] == [50, 15]
    assert sum(pages, []) == odd
    html = client.get("/messages/", {"recipient": "R7@DEST.test"}).content.decode()
    assert listed_ids(html) == [
        m.queue_id for m in many if m.recipients.get().address == "r7@dest.test"
    ]
    assert "(1)</span>" in html and not pager_links(html)


def test_a_mangled_cursor_shows_the_newest_page(owner, many):
    client = logged_in(owner[1])
    html = client.get("/messages/", {"before": "yesterday_1"}).content.decode()
    assert listed_ids(html) == [m.queue_id for m in many[:50]]


def test_a_bounded_scan_says_where_it_stopped_and_searches_on(owner, many, monkeypatch):
    from delivery import message_log

    monkeypatch.setattr(message_log, "SCAN_LIMIT", 40)
    client = logged_in(owner[1])
    # Only the oldest message holds this part of an address: the first pages find
    # nothing, say so, and lead on until it is found, never an empty answer alone.
    target = many[-1]
    address = target.recipients.get().address
    pages, url = [], f"/messages/?{urlencode({'recipient_contains': address.upper()})}"
    for _ in range(10):
        html = client.get(url).content.decode()
        pages.append(listed_ids(html))
        links = pager_links(html)
        if "next" not in links:
            break
        assert "searched_to" in html.replace("data-searched-to", "searched_to")
        assert "Search older" in html and "No message matches" not in html
        url = f"/messages/{links['next']}"
    assert [len(page) for page in pages] == [0, 0, 0, 1]
    assert pages[-1] == [target.queue_id]
    assert "data-searched-to" not in html  # the last window reached the end: exact
    # Newer searches back up the same way, window by window, to the newest page.
    url = f"/messages/{pager_links(html)['prev']}"
    for _ in range(10):
        html = client.get(url).content.decode()
        assert listed_ids(html) == []
        links = pager_links(html)
        if "prev" not in links:
            break
        assert "Search newer" in html
        url = f"/messages/{links['prev']}"
    assert "Search older" in html and "next" in links  # back at the first window

    # A tag on every other message: each window of 40 holds 20, each page says where it
    # stopped, and walking on lists every one once.
    html = client.get("/messages/", {"tag": "even"}).content.decode()
    assert len(listed_ids(html)) == 20 and "data-searched-to" in html
    pages = walk(client, "/messages/?tag=even", "next")
    assert sum(pages, []) == [m.queue_id for m in many if m.tags == ["even"]]


def test_rare_and_common_states_list_the_same_messages(owner, log, monkeypatch):
    from delivery import message_log

    client = api(owner[0])
    queries = [{"status": "queued"}, {"status": "queued", "recipient": "bob@dest.test"}]
    before = [ids(client.get(LIST, query)) for query in queries]
    monkeypatch.setattr(message_log, "RARE_LIMIT", 1)  # now every filter is "common"
    assert [ids(client.get(LIST, query)) for query in queries] == before


def test_api_count_is_exact_when_small_and_a_bounded_scan_says_so(owner, many, monkeypatch):
    from delivery import message_log

    client = api(owner[0])
    body = client.get(LIST, {"limit": 100}).json()
    assert body["count"] == 130 and body["searched_since"] is None
    rest = client.get(body["next"]).json()
    assert len(rest["results"]) == 30 and rest["next"] is None and rest["count"] == 130
    monkeypatch.setattr(message_log, "COUNT_LIMIT", 60)
    assert client.get(LIST, {"limit": 10}).json()["count"] == 60  # at least 60
    # next goes on past the capped count, to the end.
    middle = client.get(LIST, {"limit": 50, "offset": 50}).json()
    assert middle["count"] == 60 and "offset=100" in middle["next"]
    last = client.get(middle["next"]).json()
    assert len(last["results"]) == 30 and last["next"] is None and last["count"] == 130

    monkeypatch.setattr(message_log, "SCAN_LIMIT", 40)
    body = client.get(LIST, {"tag": "odd", "limit": 100}).json()
    since = body["searched_since"]
    assert since is not None
    found = [row["queue_id"] for row in body["results"]]
    # Continue below the stop with until: every odd message once, newest first.
    for _ in range(10):
        if since is None:
            break
        body = client.get(LIST, {"tag": "odd", "limit": 100, "until": since}).json()
        found += [row["queue_id"] for row in body["results"]]
        since = body["searched_since"]
    assert found == [m.queue_id for m in many if m.tags == ["odd"]]
    # A client that only follows next gets them all too (some pages may be empty).
    found, url = [], f"{LIST}?{urlencode({'tag': 'odd', 'limit': 20})}"
    for _ in range(20):
        body = client.get(url).json()
        found += [row["queue_id"] for row in body["results"]]
        url = body["next"]
        if url is None:
            break
    assert found == [m.queue_id for m in many if m.tags == ["odd"]]


def test_dashboard_detail_shows_recipients_attempts_timeline_headers(owner, log):
    news = log["news"]
    html = logged_in(owner[1]).get(f"/messages/{news.queue_id}/").content.decode()
    assert 'data-address="alice@dest.test"' in html and 'data-address="bob@dest.test"' in html
    assert ">Deferred<" in html and ">Queued<" in html
    assert "451 4.7.1</code> Greylisted, try again later" in html
    assert "mx.dest.test" in html
    assert 'id="timeline"' in html and "Accepted and queued" in html
    assert "Deferred: a temporary failure" in html
    assert "Subject: hi" in html and "Message-ID:" in html
    assert "SECRET-BODY" not in html
    assert "not shown here" in html


def test_dashboard_outsider_gets_404_and_an_empty_list(owner, outsider, log):
    client = logged_in(outsider[1])
    assert client.get(f"/messages/{log['news'].queue_id}/").status_code == 404
    html = client.get("/messages/", {"recipient": "alice@dest.test"}).content.decode()
    assert "data-queue-id" not in html
    assert client.get("/messages/NOSUCHQUEUEID/").status_code == 404


def test_dashboard_needs_a_login(owner, log):
    for url in ("/messages/", f"/messages/{log['news'].queue_id}/"):
        response = Client().get(url)
        assert response.status_code == 302 and response.url.startswith("/login/")


def test_dashboard_without_a_tenant(db):
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_user("nobody@x.test", password="pw-nobody-1")
    page = logged_in(user).get("/messages/")
    assert page.status_code == 200 and b"No tenant yet" in page.content


# -- retention -------------------------------------------------------------------------------


def test_bodies_go_after_30_days_headers_and_log_stay(owner, acme):
    tenant = owner[0]
    fresh = send(tenant, "a@dest.test", days_ago=29.9)
    old = send(tenant, "a@dest.test", days_ago=30.1)
    old_deferred = send(tenant, "a@dest.test", days_ago=40)
    old_held = send(tenant, "a@dest.test", days_ago=40)
    old_sending = send(tenant, "a@dest.test", days_ago=40)
    old_queued = send(tenant, "a@dest.test", days_ago=40)
    old_mixed = send(tenant, "a@dest.test", "b@dest.test", days_ago=40)
    for message in (fresh, old):
        finish_all(message, S.DELIVERED)
    finish_all(old_deferred, S.DEFERRED)
    finish_all(old_held, S.HELD)
    finish_all(old_sending, S.SENDING)
    Recipient.objects.filter(message=old_mixed, address="a@dest.test").update(state=S.BOUNCED)
    before = {m.pk: bytes(m.raw) for m in Message.objects.all()}

    result = retention.clean_up()

    assert result == retention.CleanupResult(messages_deleted=0, bodies_removed=1)
    old.refresh_from_db()
    assert old.body_removed_at is not None
    assert bytes(old.raw) == before[old.pk].split(b"\r\n\r\n")[0] + b"\r\n\r\n"
    assert BODY not in bytes(old.raw) and b"Subject: hi\r\n" in bytes(old.raw)
    assert old.size == len(before[old.pk])  # the size as accepted
    assert Recipient.objects.filter(message=old).count() == 1
    assert Event.objects.filter(message=old).count() == 1
    for kept in (fresh, old_deferred, old_held, old_sending, old_queued, old_mixed):
        kept.refresh_from_db()
        assert kept.body_removed_at is None and bytes(kept.raw) == before[kept.pk]

    # The log still shows the headers and says the body is gone.
    client = api(tenant)
    body = client.get(f"{LIST}{old.queue_id}/").json()
    assert body["body_removed_at"] is not None
    assert "Subject: hi" in body["headers"]["raw"] and body["headers"]["truncated"] is False
    html = logged_in(owner[1]).get(f"/messages/{old.queue_id}/").content.decode()
    assert "Removed on" in html and "Subject: hi" in html

    # Once the last recipient is final, the next run removes that body too.
    finish_all(old_mixed, S.DELIVERED)
    assert retention.clean_up().bodies_removed == 1
    assert retention.clean_up() == retention.CleanupResult()


def test_messages_go_after_90_days_unless_a_recipient_is_still_waiting(owner, acme):
    tenant = owner[0]
    kept_young = send(tenant, "a@dest.test", days_ago=89.9)
    gone = send(tenant, "a@dest.test", "b@dest.test", days_ago=90.1)
    gone_too = send(tenant, "c@dest.test", days_ago=400)
    waiting = {
        state: send(tenant, f"{state}@dest.test", days_ago=400)
        for state in (S.QUEUED, S.DEFERRED, S.SENDING, S.HELD)
    }
    for message in (kept_young, gone, gone_too):
        finish_all(message, S.BOUNCED)
    for state, message in waiting.items():
        finish_all(message, state)
    bounced = Recipient.objects.get(message=gone, address="a@dest.test")
    Event.record(recipient=bounced, type=EventType.BOUNCED, reply=BOUNCED)
    InboundReport.objects.create(tenant=tenant, recipient=bounced, raw=b"a DSN")
    doomed = {gone.pk, gone_too.pk}

    result = retention.clean_up()

    assert result.messages_deleted == 2
    assert not Message.objects.filter(pk__in=doomed).exists()
    assert not Recipient.objects.filter(message_id__in=doomed).exists()
    assert not Event.objects.filter(message_id__in=doomed).exists()
    assert not InboundReport.objects.filter(recipient=bounced).exists()
    left = set(Message.objects.values_list("pk", flat=True))
    assert left == {kept_young.pk, *(m.pk for m in waiting.values())}
    # The old waiting ones keep their body too; the young final one lost only its body.
    assert Message.objects.filter(body_removed_at__isnull=False).get().pk == kept_young.pk
    assert Event.objects.filter(message=kept_young).count() == 1


def test_cleanup_goes_in_bounded_batches_oldest_first(owner, acme):
    tenant = owner[0]
    messages = [send(tenant, f"u{n}@dest.test", days_ago=100 + n) for n in range(5)]
    for message in messages:
        finish_all(message)
    oldest_first = [m.pk for m in reversed(messages)]

    batch = retention.delete_expired_messages(
        before=timezone.now() - timedelta(days=90), batch_size=2
    )
    assert batch == retention.Batch(looked_at=2, changed=2)
    assert set(Message.objects.values_list("pk", flat=True)) == set(oldest_first[2:])

    # A time limit already spent: one batch, then the run says work is left.
    result = retention.clean_up(batch_size=2, time_limit=0)
    assert result.messages_deleted == 2 and result.finished is False
    assert set(Message.objects.values_list("pk", flat=True)) == {oldest_first[4]}

    result = retention.clean_up(batch_size=2)
    assert result.messages_deleted == 1 and result.finished is True
    assert not Message.objects.exists()


def test_body_removal_in_batches_and_long_header_sections(owner, acme):
    tenant = owner[0]
    filler = b"".join(b"X-Filler-%05d: %s\r\n" % (i, b"z" * 60) for i in range(1500))
    assert len(filler) > retention.HEAD_BYTES
    long_headers = send(tenant, "a@dest.test", extra_headers=filler, days_ago=31)
    no_body = send(tenant, "a@dest.test", body=b"", days_ago=32)
    plain = [send(tenant, "a@dest.test", days_ago=33 + n) for n in range(3)]
    for message in (long_headers, no_body, *plain):
        finish_all(message)
    raw_before = bytes(Message.objects.get(pk=long_headers.pk).raw)

    result = retention.clean_up(batch_size=2)

    assert result == retention.CleanupResult(messages_deleted=0, bodies_removed=5)
    long_headers.refresh_from_db()
    assert bytes(long_headers.raw) == raw_before[: raw_before.index(b"\r\n\r\n") + 4]
    assert bytes(long_headers.raw).endswith(b"X-Filler-01499: " + b"z" * 60 + b"\r\n\r\n")
    assert headers_of(message_for(tenant, long_headers.queue_id)).truncated is False
    assert not Message.objects.filter(body_removed_at__isnull=True).exists()
    assert not any(BODY in bytes(raw) for raw in Message.objects.values_list("raw", flat=True))


def test_retention_periods_are_settings_and_0_keeps_forever(owner, acme, settings):
    tenant = owner[0]
    message = send(tenant, "a@dest.test", days_ago=8)
    finish_all(message)
    settings.SENDMSG_BODY_RETENTION_DAYS = 0
    settings.SENDMSG_METADATA_RETENTION_DAYS = 0
    assert retention.clean_up() == retention.CleanupResult()
    settings.SENDMSG_BODY_RETENTION_DAYS = 7
    assert retention.clean_up().bodies_removed == 1
    settings.SENDMSG_METADATA_RETENTION_DAYS = 7
    assert retention.clean_up().messages_deleted == 1

    settings.SENDMSG_METADATA_RETENTION_DAYS = -1
    assert [e.id for e in retention_days(None)] == ["sendmsg.E010"]


def test_defaults_and_the_hourly_schedule():
    from django.conf import settings

    assert settings.SENDMSG_BODY_RETENTION_DAYS == 30
    assert settings.SENDMSG_METADATA_RETENTION_DAYS == 90
    schedule = Schedule.objects.get(name="message log retention")
    assert schedule.schedule_type == Schedule.HOURLY and schedule.repeats == -1
    assert schedule.func == "delivery.retention.scheduled_clean_up"
    assert retention.scheduled_clean_up() == {
        "messages_deleted": 0,
        "bodies_removed": 0,
        "finished": True,
    }


# -- in a real browser -----------------------------------------------------------------------


@pytest.fixture
def browser_page(monkeypatch, live_server):
    from tests.browser import CHROMIUM, CHROMIUM_ARGS

    # Playwright's sync API runs an event loop in this thread (see tests/browser.py).
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(base_url=live_server.url)
        context.set_default_timeout(10_000)
        try:
            yield context.new_page()
        finally:
            context.close()
            browser.close()


@pytest.mark.django_db(transaction=True)
def test_filter_and_open_a_message_in_chromium(owner, log, browser_page):
    from playwright.sync_api import expect

    page = browser_page
    user = owner[1]
    user.set_password("browser-log-pw-1")
    user.save()
    page.goto("/login/")
    page.get_by_label("Email or username").fill(user.username)
    page.get_by_label("Password").fill("browser-log-pw-1")
    page.get_by_role("button", name="Log in").click()

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Messages").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Messages")
    expect(page.locator("tr[data-queue-id]")).to_have_count(4)

    page.get_by_label("Status").select_option("bounced")
    page.get_by_label("Recipient contains").fill("bob@")
    day = log["receipt"].created_at.date().isoformat()
    page.get_by_label("From", exact=True).fill(day)  # a date picker: YYYY-MM-DD
    page.get_by_label("To", exact=True).fill(day)
    page.get_by_role("button", name="Show messages").click()
    rows = page.locator("tr[data-queue-id]")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-queue-id", log["receipt"].queue_id)
    expect(page.get_by_label("Status")).to_have_value("bounced")

    rows.first.get_by_role("link").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Your receipt")
    bob = page.locator('table.attempts[data-address="Bob@Dest.test"]')
    expect(bob).to_contain_text("550 5.1.1")
    expect(bob).to_contain_text("No such user here")
    expect(page.locator("#raw-headers")).to_contain_text("Subject: Your receipt")
    expect(page.locator("main")).not_to_contain_text("SECRET-BODY")
