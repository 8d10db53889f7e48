"""The five reputation levels: a tenant driven down by its hard bounces and back up by
clean windows, throttled and then refused at both doors, next to a tenant that is not
affected; operators pinning a level (reputation/stats.py, levels.py, gate.py)."""

from __future__ import annotations

import smtplib
from datetime import UTC, datetime, time, timedelta

import pytest
import time_machine
from django.conf import settings
from django.test.utils import override_settings
from rest_framework.test import APIClient

from delivery.credentials import create_api_key, create_smtp_credential
from delivery.models import Event, EventType, Message, Recipient, RecipientState, Source
from domains.models import Domain, DomainStatus, Tenant
from domains.tenancy import add_domain, create_tenant
from reputation.levels import band, pin, unpin
from reputation.models import DailyStats, Level, LevelChange, Standing
from reputation.tasks import update_reputation

pytestmark = pytest.mark.django_db(transaction=True)

T0 = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
WINDOW = timedelta(days=7)


def record(domain: Domain, *, delivered: int = 0, bounced: int = 0, deferred: int = 0) -> None:
    """Outcomes as the relay records them: one message, its recipients, their events."""
    message = Message.objects.create(
        tenant=domain.tenant,
        domain=domain,
        source=Source.API,
        mail_from=f"news@{domain.name}",
        raw=b"Subject: s\r\n\r\nx\r\n",
        size=17,
    )
    outcomes = (
        [EventType.DELIVERED] * delivered
        + [EventType.BOUNCED] * bounced
        + [EventType.DEFERRED] * deferred
    )
    states = {
        EventType.DELIVERED: RecipientState.DELIVERED,
        EventType.BOUNCED: RecipientState.BOUNCED,
        EventType.DEFERRED: RecipientState.DEFERRED,
    }
    codes = {EventType.DELIVERED: 250, EventType.BOUNCED: 550, EventType.DEFERRED: 451}
    recipients = Recipient.objects.bulk_create(
        Recipient(
            message=message,
            tenant=domain.tenant,
            address=f"r{n}@dest.test",
            domain="dest.test",
            state=states[kind],
        )
        for n, kind in enumerate(outcomes)
    )
    Event.objects.bulk_create(
        Event(
            tenant=domain.tenant,
            message=message,
            recipient=recipient,
            type=kind,
            code=codes[kind],
        )
        for recipient, kind in zip(recipients, outcomes, strict=True)
    )


def queued(domain: Domain, address: str) -> Message:
    """A message waiting in the queue for ``address``, as accepted earlier. Made directly:
    accepting would wake the platform's workers (if a test of the session started them),
    and this test's deliver calls would then race them."""
    message = Message.objects.create(
        tenant=domain.tenant,
        domain=domain,
        source=Source.API,
        mail_from=f"news@{domain.name}",
        header_from=f"news@{domain.name}",
        raw=f"From: news@{domain.name}\r\nSubject: queued\r\n\r\nx\r\n".encode(),
        size=40,
    )
    Recipient.objects.create(
        message=message, tenant=domain.tenant, address=address, domain=address.split("@")[1]
    )
    return message


def level_of(tenant: Tenant) -> int:
    return Standing.objects.get(tenant=tenant, domain__isnull=True).level


def api_for(tenant: Tenant) -> APIClient:
    _, key = create_api_key(tenant=tenant)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


def send(client: APIClient, sender: str):
    return client.post(
        "/api/v1/send/",
        # queue.example is no zone of the test DNS (REFUSED): the platform's workers defer
        # these (no bounce to count, no SMTP) instead of relaying them into a later test.
        {
            "from": {"email": sender},
            "to": ["alice@queue.example"],
            "subject": "s",
            "text": "x",
        },
        format="json",
    )


def sends_until_refused(client: APIClient, sender: str, limit: int = 60) -> tuple[int, object]:
    for sent in range(limit):
        response = send(client, sender)
        if response.status_code != 201:
            return sent, response
    raise AssertionError(f"{limit} sends, none refused")


def smtp_sends(credential, password, client_tls, count: int) -> list[int]:
    """Whole messages over one session: each one's final code (451s must say 4.7.1)."""
    codes = []
    with smtplib.SMTP("127.0.0.1", settings.SENDMSG_SUBMISSION_PORT, timeout=15) as client:
        client.starttls(context=client_tls)
        client.login(credential.username, password)
        for n in range(count):
            try:
                client.sendmail(
                    "news@acme.test",
                    [f"s{n}@queue.example"],
                    b"From: news@acme.test\r\n\r\nx\r\n",
                )
                codes.append(250)
            except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
                assert exc.smtp_error.startswith(b"4.7.1"), exc.smtp_error
                codes.append(exc.smtp_code)
    return codes


def smtp_mail(credential, password, client_tls) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", settings.SENDMSG_SUBMISSION_PORT, timeout=15) as client:
        client.starttls(context=client_tls)
        client.login(credential.username, password)
        return client.mail("news@acme.test")


@pytest.mark.peers
def test_bounces_move_a_tenant_down_five_levels_and_clean_windows_bring_it_back(
    platform, verified_domain, client_tls
):
    acme = verified_domain.tenant
    Tenant.objects.filter(pk=acme.pk).update(plan_rate=40)
    other = create_tenant(name="Globex", owner_email="owner@globex.test").tenant
    globex_domain = add_domain(tenant=other, name="globex.test")
    Domain.objects.filter(pk=globex_domain.pk).update(status=DomainStatus.VERIFIED)
    acme_api, globex_api = api_for(acme), api_for(other)
    credential, password = create_smtp_credential(tenant=acme)

    def globex_unaffected():
        record(globex_domain, delivered=50)
        assert send(globex_api, "news@globex.test").status_code == 201

    with time_machine.travel(T0, tick=False) as traveller:
        # 1,000 delivered, no bounce: excellent, full plan rate.
        record(verified_domain, delivered=1000)
        update_reputation()
        assert level_of(acme) == Level.EXCELLENT
        assert send(acme_api, "news@acme.test").status_code == 201

        # Hard bounces 3.0% of 1,031: good (under 4%), still the full rate.
        record(verified_domain, bounced=31)
        update_reputation()
        assert level_of(acme) == Level.GOOD
        globex_unaffected()

        # 4.5%: watch, half the plan rate (20 this hour; one message sent already).
        record(verified_domain, bounced=17)
        update_reputation()
        assert level_of(acme) == Level.WATCH
        sent, refused = sends_until_refused(acme_api, "news@acme.test")
        assert sent == 19 and refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limited"
        assert "level 3" in refused.json()["error"]["message"]
        assert int(refused["Retry-After"]) > 0
        globex_unaffected()

        # 7.4%: restricted, a tenth of the plan rate (4 an hour) over SMTP too (the
        # listener's hour is the real one: its counter starts empty there).
        record(verified_domain, bounced=33)
        update_reputation()
        assert level_of(acme) == Level.RESTRICTED
        assert send(acme_api, "news@acme.test").status_code == 429
        assert smtp_sends(credential, password, client_tls, 5) == [250] * 4 + [451]

        # 10.7%: suspended; the API says 403, SMTP 550 5.7.1 at MAIL.
        record(verified_domain, bounced=45)
        update_reputation()
        assert level_of(acme) == Level.SUSPENDED
        response = send(acme_api, "news@acme.test")
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "reputation_suspended"
        code, text = smtp_mail(credential, password, client_tls)
        assert (code, text[:5]) == (550, b"5.7.1") and b"level 5" in text
        globex_unaffected()
        # The tenant's own level, and its one domain's beside it.
        for domain in (None, verified_domain):
            changes = LevelChange.objects.filter(tenant=acme, domain=domain).reverse()
            assert [change.new_level for change in changes] == [2, 3, 4, 5]

        # Clean mail from now on. The bad days leave the window after 7 days; then each
        # whole window inside a better band brings it up one level, never more.
        levels = []
        for _ in range(6):
            traveller.shift(WINDOW)
            record(verified_domain, delivered=300)
            update_reputation()
            levels.append(level_of(acme))
            globex_unaffected()
        assert levels == [5, 4, 3, 2, 1, 1]
        assert send(acme_api, "news@acme.test").status_code == 201
        assert level_of(other) == Level.EXCELLENT
        assert not LevelChange.objects.filter(tenant=other).exists()
        ups = LevelChange.objects.filter(tenant=acme, new_level__lt=5).order_by("id")
        assert "better band" in ups.last().reason


def test_the_minimum_sample_keeps_a_few_bounces_from_counting(verified_domain):
    record(verified_domain, delivered=60, bounced=30)  # 33%, but only 90 messages
    update_reputation()
    assert level_of(verified_domain.tenant) == Level.EXCELLENT
    # A new standing says why it is where it starts, as the dashboard shows it.
    own = Standing.objects.get(tenant=verified_domain.tenant, domain=None)
    assert own.reason.startswith("too few messages for a bounce rate (90)")
    record(verified_domain, delivered=5, bounced=5)  # now 100: 35%
    update_reputation()
    assert level_of(verified_domain.tenant) == Level.SUSPENDED


def test_a_domain_has_its_own_level_and_a_message_gets_the_stricter(verified_domain):
    tenant = verified_domain.tenant
    good = add_domain(tenant=tenant, name="good.test")
    Domain.objects.filter(pk=good.pk).update(status=DomainStatus.VERIFIED)
    good.refresh_from_db()
    record(good, delivered=5000)
    record(verified_domain, delivered=200, bounced=40)  # 16.7% on acme.test alone
    update_reputation()
    assert Standing.objects.get(domain=verified_domain).level == Level.SUSPENDED
    assert Standing.objects.get(domain=good).level == Level.EXCELLENT
    assert level_of(tenant) == Level.EXCELLENT  # 40 of 5,240: 0.8%
    client = api_for(tenant)
    assert send(client, "news@good.test").status_code == 201
    response = send(client, "news@acme.test")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "reputation_suspended"


def test_counting_is_incremental_and_exact(verified_domain):
    record(verified_domain, delivered=10, bounced=2)
    update_reputation()
    update_reputation()  # nothing new: nothing counted twice
    record(verified_domain, delivered=3, deferred=4)
    update_reputation()
    stats = DailyStats.objects.get(domain=verified_domain)
    assert (stats.delivered, stats.hard_bounced, stats.deferred) == (13, 2, 4)


def test_an_operator_pins_and_unpins_a_level_with_a_reason(verified_domain, django_user_model):
    tenant = verified_domain.tenant
    operator = django_user_model.objects.create_user("op", "op@platform.test", "x" * 20)
    record(verified_domain, delivered=1000)
    update_reputation()
    with pytest.raises(ValueError):
        pin(tenant, Level.RESTRICTED, reason=" ", actor=operator)
    pin(tenant, Level.SUSPENDED, reason="phishing report from a partner", actor=operator)
    update_reputation()  # the rates are excellent; the pin holds
    assert level_of(tenant) == Level.SUSPENDED
    client = api_for(tenant)
    assert send(client, "news@acme.test").json()["error"]["code"] == "reputation_suspended"
    unpin(tenant, reason="partner withdrew the report", actor=operator)
    assert level_of(tenant) == Level.EXCELLENT
    assert send(client, "news@acme.test").status_code == 201
    changes = list(LevelChange.objects.filter(tenant=tenant).order_by("id"))
    assert [(c.old_level, c.new_level, c.actor, c.pinned) for c in changes] == [
        (1, 5, operator, True),
        (5, 1, operator, False),
    ]
    assert "phishing report" in changes[0].reason and "withdrew" in changes[1].reason


@pytest.mark.parametrize(
    ("delivered", "bounced", "complained", "level"),
    [
        (10_000, 199, 0, 1),  # 1.95%
        (10_000, 210, 0, 2),  # 2.06%
        (10_000, 420, 0, 3),  # 4.03%
        (10_000, 530, 0, 4),  # 5.03%
        (10_000, 1120, 0, 5),  # 10.07%
        (10_000, 0, 4, 1),  # 0.04% complaints
        (10_000, 0, 6, 2),  # 0.06%
        (10_000, 0, 20, 3),  # 0.2%
        (10_000, 0, 40, 4),  # 0.4%
        (10_000, 0, 60, 5),  # 0.6%
        (999, 0, 50, 1),  # under 1,000 delivered: complaints don't count yet
        (100_000, 0, 2, 1),  # two complaints never count
    ],
)
def test_bands_follow_the_design_thresholds(delivered, bounced, complained, level):
    from reputation.levels import Rates

    assert band(Rates(delivered, bounced, complained))[0] == level


def test_an_operator_pins_a_level_in_the_admin(verified_domain, admin_user):
    from django.test import Client
    from django.urls import reverse

    tenant = verified_domain.tenant
    record(verified_domain, delivered=1000)
    update_reputation()
    standing = Standing.objects.get(tenant=tenant, domain__isnull=True)
    client = Client()
    client.force_login(admin_user)
    url = reverse("admin:reputation_standing_change", args=[standing.pk])
    refused = client.post(url, {"level": 4, "pinned": "on", "pin_reason": " "})
    assert refused.status_code == 200 and "Say why this level is pinned" in refused.text
    assert level_of(tenant) == Level.EXCELLENT
    saved = client.post(url, {"level": 4, "pinned": "on", "pin_reason": "abuse desk ticket 42"})
    assert saved.status_code == 302
    assert level_of(tenant) == Level.RESTRICTED
    change = LevelChange.objects.get(tenant=tenant)
    assert (change.old_level, change.new_level, change.actor) == (1, 4, admin_user)
    assert change.pinned and "ticket 42" in change.reason
    assert client.get(reverse("admin:reputation_levelchange_changelist")).status_code == 200


@override_settings(SENDMSG_WARMUP_DAILY_CAPS=[3, 5])
def test_a_new_domain_warms_up_with_daily_caps(verified_domain):
    tenant = verified_domain.tenant
    old = add_domain(tenant=tenant, name="old.test")
    day_one = datetime.combine(verified_domain.verified_at.date(), time(12), tzinfo=UTC)
    Domain.objects.filter(pk=old.pk).update(
        status=DomainStatus.VERIFIED, verified_at=day_one - timedelta(days=30)
    )
    client = api_for(tenant)
    with time_machine.travel(day_one, tick=False) as traveller:
        sent, refused = sends_until_refused(client, "news@acme.test")
        assert sent == 3 and refused.status_code == 429
        error = refused.json()["error"]
        assert error["code"] == "rate_limited" and "warming up (day 1 of 2)" in error["message"]
        assert int(refused["Retry-After"]) == 12 * 3600 + 1  # at midnight UTC
        # An established domain of the same tenant is not held back.
        assert [send(client, "news@old.test").status_code for _ in range(6)] == [201] * 6

        traveller.move_to(day_one + timedelta(days=1))
        sent, refused = sends_until_refused(client, "news@acme.test")
        assert sent == 5 and "day 2 of 2" in refused.json()["error"]["message"]

        traveller.move_to(day_one + timedelta(days=2))  # the schedule is over
        assert [send(client, "news@acme.test").status_code for _ in range(12)] == [201] * 12
    assert Message.objects.filter(domain=verified_domain).count() == 3 + 5 + 12


def test_the_queue_of_a_suspended_sender_is_held_until_it_is_lifted(
    verified_domain, mx, django_user_model
):
    from delivery import tasks

    tenant = verified_domain.tenant
    operator = django_user_model.objects.create_user("op", "op@platform.test", "x" * 20)
    message = queued(verified_domain, "alice@dest.test")
    pin(tenant, Level.SUSPENDED, reason="complaints from a feedback loop", actor=operator)
    assert tasks.deliver([message.pk]) == 0  # not claimed: held
    assert not Recipient.objects.due().exists() and not mx.messages
    assert Recipient.objects.get(message=message).state == RecipientState.QUEUED

    unpin(tenant, reason="list cleaned", actor=operator)
    assert tasks.deliver([message.pk]) == 1
    assert [m.rcpt_tos for m in mx.messages] == [["alice@dest.test"]]

    # A sending domain at level 5 holds only that domain's mail; so does an operator's
    # suspension of the whole tenant.
    second = queued(verified_domain, "bob@dest.test")
    pin(tenant, Level.SUSPENDED, reason="spam trap hits", actor=operator, domain=verified_domain)
    assert tasks.deliver([second.pk]) == 0
    unpin(tenant, reason="resolved", actor=operator, domain=verified_domain)
    Tenant.objects.filter(pk=tenant.pk).update(suspended=True)
    assert tasks.deliver([second.pk]) == 0
    Tenant.objects.filter(pk=tenant.pk).update(suspended=False)
    assert tasks.deliver([second.pk]) == 1


def test_a_level_change_is_sent_to_the_webhooks_that_chose_it(
    verified_domain, django_user_model, settings
):
    import json

    from delivery.webhooks import tasks as webhook_tasks
    from delivery.webhooks.endpoints import create_endpoint
    from tests.peers.http_receiver import HttpReceiver
    from tests.test_webhooks import readme_verify

    settings.SENDMSG_WEBHOOK_ALLOW_PRIVATE = True
    tenant = verified_domain.tenant
    operator = django_user_model.objects.create_user("op", "op@platform.test", "x" * 20)
    with HttpReceiver("127.0.0.5") as receiver:
        _, secret = create_endpoint(
            tenant=tenant, url=receiver.url("/level"), event_types=["reputation.level_changed"]
        )
        create_endpoint(tenant=tenant, url=receiver.url("/other"), event_types=["delivered"])
        record(verified_domain, delivered=90, bounced=10)  # 10% of 100: suspended
        update_reputation()
        pin(tenant, Level.RESTRICTED, reason="reviewed by the abuse desk", actor=operator)
        webhook_tasks.dispatch()
        requests = [request for request in receiver.requests if request.path == "/level"]
        others = [request for request in receiver.requests if request.path == "/other"]
        assert len(requests) == 3  # tenant and domain by the rates, then the pin
        assert all(
            readme_verify()(secret, request.headers["sendmsg-signature"], request.body)
            for request in requests
        )
    assert {request.headers["sendmsg-event-type"] for request in requests} == {
        "reputation.level_changed"
    }
    assert {request.headers["sendmsg-event-type"] for request in others} == {"delivered"}
    bodies = [json.loads(request.body) for request in requests]
    by_domain = {body["domain"]: body for body in bodies if body["by"] == "rates"}
    assert by_domain["acme.test"]["new_level"] == by_domain[None]["new_level"] == 5
    assert by_domain[None]["level"] == "suspended" and "10.00%" in by_domain[None]["reason"]
    (pinned,) = [body for body in bodies if body["by"] == "operator"]
    assert (pinned["old_level"], pinned["new_level"], pinned["pinned"]) == (5, 4, True)
    assert "abuse desk" in pinned["reason"]


def test_the_relays_own_bounces_are_counted_by_class_and_hard_ones_suppress(verified_domain, mx):
    from delivery.accept import Sender, accept_message
    from delivery.relay import deliver_message
    from reputation.models import Suppression, SuppressionReason

    mx.reply_rcpt("nobody@dest.test", "550 5.1.1 No such user")
    mx.reply_rcpt("filtered@dest.test", "554 5.7.1 Message rejected as spam")
    message = accept_message(
        sender=Sender(tenant_id=verified_domain.tenant_id),
        mail_from="news@acme.test",
        recipients=["alice@dest.test", "nobody@dest.test", "filtered@dest.test"],
        raw=b"From: news@acme.test\r\nSubject: s\r\n\r\nx\r\n",
        source=Source.API,
    )
    assert deliver_message(message.pk) == 3
    update_reputation()
    update_reputation()  # once only
    stats = DailyStats.objects.get(domain=verified_domain)
    counted = (stats.accepted, stats.delivered, stats.hard_bounced, stats.soft_bounced)
    assert counted == (3, 1, 1, 1)
    (entry,) = Suppression.objects.filter(tenant=verified_domain.tenant)
    assert (entry.address, entry.reason) == ("nobody@dest.test", SuppressionReason.HARD_BOUNCE)
    assert entry.source_event.recipient.address == "nobody@dest.test"


def test_the_queued_mail_of_a_restricted_sender_goes_out_at_its_restricted_rate(
    verified_domain, mx, django_user_model
):
    from delivery import tasks

    tenant = verified_domain.tenant
    Tenant.objects.filter(pk=tenant.pk).update(plan_rate=40)  # restricted: 4 an hour
    operator = django_user_model.objects.create_user("op", "op@platform.test", "x" * 20)
    with time_machine.travel(T0, tick=False) as traveller:
        messages = [queued(verified_domain, f"r{n}@dest.test") for n in range(7)]
        pin(tenant, Level.RESTRICTED, reason="bounces from an old list", actor=operator)
        ids = [message.pk for message in messages]
        for message_id in ids:  # one task each: each claim looks at the share again
            tasks.deliver([message_id])
        assert len(mx.messages) == 4
        assert Recipient.objects.filter(state=RecipientState.QUEUED).count() == 3

        traveller.shift(timedelta(minutes=30))  # the hour's share is still spent
        assert tasks.deliver(ids) == 0
        traveller.shift(timedelta(minutes=31))  # an hour after the first four
        for message_id in ids:
            tasks.deliver([message_id])
        assert len(mx.messages) == 7
