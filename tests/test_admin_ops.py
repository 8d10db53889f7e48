"""The operators' admin as a product: the lists answer an operator's questions (who is
at level 4 or 5, which domains fail DNS, what is stuck in the queue and why), every
operator action leaves an audit row in the tenant, and the overview page sums up the
platform in a bounded number of statements."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from delivery.credentials import create_api_key
from delivery.models import (
    Event,
    Message,
    Recipient,
    RecipientState,
    Source,
    WebhookDelivery,
    WebhookDeliveryState,
    WebhookEndpoint,
)
from domains.models import AuditEntry, Domain, DomainStatus, Tenant
from domains.tenancy import add_domain
from reputation.models import DailyStats, Standing

pytestmark = pytest.mark.django_db

S = RecipientState


@pytest.fixture
def operator(admin_user) -> Client:
    client = Client()
    client.force_login(admin_user)
    return client


def listed(response) -> list[str]:
    """The rows of a changelist page, as their str()."""
    assert response.status_code == 200, response.content[:500]
    return sorted(str(row) for row in response.context["cl"].result_list)


def changelist(model: str) -> str:
    app = {"tenant": "domains", "domain": "domains", "standing": "reputation"}.get(
        model, "delivery"
    )
    return reverse(f"admin:{app}_{model}_changelist")


def act(operator: Client, model: str, action: str, pks, **extra):
    return operator.post(
        changelist(model),
        {"action": action, "_selected_action": [str(pk) for pk in pks], **extra},
        follow=True,
    )


def page_messages(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def tenant(name: str) -> Tenant:
    return Tenant.objects.create(name=name)


def domain(owner: Tenant, name: str, **fields) -> Domain:
    return Domain.objects.create(tenant=owner, name=name, **fields)


def message(owner: Tenant, sending: Domain, *states, **fields) -> list[Recipient]:
    """A message of ``owner`` with one recipient per state (r0@dest.test, r1@…)."""
    stored = Message.objects.create(
        tenant=owner,
        domain=sending,
        source=Source.API,
        mail_from=f"news@{sending.name}",
        raw=b"Subject: hi\r\n\r\nbody\r\n",
        size=21,
    )
    return [
        Recipient.objects.create(
            message=stored,
            tenant=owner,
            address=f"r{i}@dest.test",
            domain="dest.test",
            state=state,
            **fields,
        )
        for i, state in enumerate(states)
    ]


# -- questions, answered by the lists -------------------------------------------------------


def test_tenants_by_reputation_level(operator):
    calm, watched, restricted, suspended = (tenant(n) for n in ("Calm", "Watched", "Low", "Bad"))
    shaky_domain = tenant("ShakyDomain")
    Standing.objects.create(tenant=watched, level=3)
    Standing.objects.create(tenant=restricted, level=4)
    Standing.objects.create(tenant=suspended, level=5)
    Standing.objects.create(tenant=shaky_domain, level=2)
    Standing.objects.create(tenant=shaky_domain, domain=domain(shaky_domain, "shaky.test"), level=5)
    url = changelist("tenant")
    assert listed(operator.get(url, {"level": "4-5"})) == ["Bad", "Low"]
    assert listed(operator.get(url, {"level": "1"})) == ["Calm"]  # no standing yet: 1
    assert listed(operator.get(url, {"level": "3"})) == ["Watched"]
    assert listed(operator.get(url, {"level": "domain-4-5"})) == ["ShakyDomain"]
    page = operator.get(url, {"level": "4-5"}).content.decode()
    assert "restricted or suspended (4–5)" in page and "5 suspended" in page
    everyone = operator.get(url)
    rows = {t.name: (t.level, t.worst_domain_level) for t in everyone.context["cl"].result_list}
    assert rows["ShakyDomain"] == (2, 5) and rows["Calm"] == (1, None)
    assert calm.name in everyone.content.decode()


def test_domains_by_dns_health(operator, owner):
    now = timezone.now()
    acme = owner[0]
    ok = {"dns_verified": True, "status": DomainStatus.VERIFIED, "checked_at": now}
    domain(acme, "healthy.test", health_score=100, **ok)
    domain(acme, "low.test", health_score=50, **ok)
    domain(acme, "gone.test", health_score=90, checked_at=now, dns_verified=False)
    domain(acme, "old.test", **{**ok, "checked_at": now - timedelta(days=2)}, health_score=100)
    domain(acme, "never.test")
    domain(acme, "off.test", status=DomainStatus.DISABLED, health_score=0, checked_at=now)
    url = changelist("domain")
    assert listed(operator.get(url, {"dns": "failing"})) == [
        "gone.test",
        "low.test",
        "never.test",
        "old.test",
    ]
    assert listed(operator.get(url, {"dns": "healthy"})) == ["healthy.test"]
    assert listed(operator.get(url, {"dns": "unverified"})) == ["gone.test"]
    assert listed(operator.get(url, {"dns": "low_score"})) == ["low.test"]
    assert listed(operator.get(url, {"dns": "stale"})) == ["never.test", "old.test"]
    page = operator.get(url).content.decode()
    assert "DNS health" in page and "not checked for a day" in page


def test_what_is_stuck_in_the_queue_and_why(operator, owner, outsider):
    now = timezone.now()
    acme, globex = owner[0], outsider[0]
    sending = domain(acme, "acme.test")
    late, fine = message(acme, sending, S.QUEUED, S.QUEUED)
    late.next_attempt_at = now - timedelta(hours=2)
    late.save()
    fine.next_attempt_at = now - timedelta(minutes=5)
    fine.save()
    [tried] = message(
        acme,
        sending,
        S.DEFERRED,
        attempts=6,
        next_attempt_at=now + timedelta(minutes=9),
        last_code=451,
        last_enhanced="4.7.1",
        last_text="Try again later, greylisted",
    )
    [lost] = message(acme, sending, S.SENDING, lease_until=now - timedelta(hours=1))
    message(acme, sending, S.DELIVERED, S.HELD, next_attempt_at=now - timedelta(days=1))
    [other] = message(
        globex, domain(globex, "globex.test"), S.QUEUED, next_attempt_at=now - timedelta(hours=3)
    )
    url = changelist("recipient")

    def pks(response) -> set[int]:
        assert response.status_code == 200
        return {r.pk for r in response.context["cl"].result_list}

    assert pks(operator.get(url, {"stuck": "yes"})) == {late.pk, tried.pk, lost.pk, other.pk}
    acme_stuck = operator.get(url, {"stuck": "yes", "tenant__id__exact": acme.pk})
    assert pks(acme_stuck) == {late.pk, tried.pk, lost.pk}
    assert pks(operator.get(url, {"state__exact": "deferred"})) == {tried.pk}
    assert pks(operator.get(url, {"waiting": "yes"})) == {
        late.pk,
        fine.pk,
        tried.pk,
        lost.pk,
        other.pk,
        Recipient.objects.get(state=S.HELD).pk,
    }
    # Why: the last reply, the attempts and the age are on the row.
    page = operator.get(url, {"stuck": "yes"}).content.decode()
    assert "451 4.7.1 Try again later, greylisted" in page
    # Search by queue id (exact) or by address.
    queue_id = other.message.queue_id
    assert pks(operator.get(url, {"q": queue_id})) == {other.pk}
    assert pks(operator.get(url, {"q": queue_id[:6]})) == set()
    assert len(pks(operator.get(url, {"q": "r1@dest"}))) == 2  # fine and the held one


# -- actions, each audited in the tenant ----------------------------------------------------


def api_send(key: str):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    body = {"from": "news@acme.test", "to": ["alice@dest.test"], "subject": "Hi", "text": "Hi"}
    return client.post("/api/v1/send/", body, format="json")


def test_suspend_with_a_reason_refuses_sends_and_reinstate_lifts_it(operator, owner, outsider):
    acme = owner[0]
    sending = add_domain(tenant=acme, name="acme.test")
    Domain.objects.filter(pk=sending.pk).update(status=DomainStatus.VERIFIED)
    key = create_api_key(tenant=acme)[1]
    assert api_send(key).status_code == 201

    # The action first asks for the reason, on a page of its own.
    page = act(operator, "tenant", "suspend", [acme.pk])
    assert page.status_code == 200 and b'name="reason"' in page.content
    assert b"Acme" in page.content and not Tenant.objects.get(pk=acme.pk).suspended
    # No reason: asked again, nothing changes.
    again = act(operator, "tenant", "suspend", [acme.pk], apply="1", reason="  ")
    assert b"This field is required." in again.content
    assert not Tenant.objects.get(pk=acme.pk).suspended

    done = act(operator, "tenant", "suspend", [acme.pk], apply="1", reason="Phishing reports")
    assert "1 tenant(s) suspended: Acme." in page_messages(done)
    acme.refresh_from_db()
    assert acme.suspended and acme.suspended_reason == "Phishing reports"
    assert timezone.now() - acme.suspended_at < timedelta(minutes=1)
    entry = AuditEntry.objects.get(tenant=acme, action="tenant.suspended")
    assert entry.actor_label == "operator admin" and entry.detail == {"reason": "Phishing reports"}
    assert not AuditEntry.objects.filter(tenant=outsider[0]).exists()

    refused = api_send(key)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "account_suspended"

    # Suspending again changes nothing and says so.
    twice = act(operator, "tenant", "suspend", [acme.pk], apply="1", reason="again")
    assert any("already suspended" in m for m in page_messages(twice))
    assert Tenant.objects.get(pk=acme.pk).suspended_reason == "Phishing reports"

    lifted = act(operator, "tenant", "reinstate", [acme.pk], apply="1", reason="Cleaned up")
    assert "1 tenant(s) reinstated: Acme." in page_messages(lifted)
    acme.refresh_from_db()
    assert (acme.suspended, acme.suspended_reason, acme.suspended_at) == (False, "", None)
    entry = AuditEntry.objects.get(tenant=acme, action="tenant.reinstated")
    assert entry.actor_label == "operator admin"
    assert entry.detail == {"reason": "Cleaned up", "suspended_for": "Phishing reports"}
    assert api_send(key).status_code == 201


def test_suspension_is_not_edited_in_the_change_form(operator, owner):
    page = operator.get(reverse("admin:domains_tenant_change", args=[owner[0].pk]))
    assert page.status_code == 200
    assert b'name="suspended"' not in page.content
    assert b'name="suspended_reason"' not in page.content


def test_purge_cancels_only_that_tenants_waiting_recipients(operator, owner, outsider):
    acme, globex = owner[0], outsider[0]
    acme_rows = message(
        acme, domain(acme, "acme.test"), S.QUEUED, S.DEFERRED, S.HELD, S.SENDING, S.DELIVERED
    )
    globex_rows = message(globex, domain(globex, "globex.test"), S.QUEUED, S.DEFERRED)

    confirm = act(operator, "tenant", "purge_queue", [acme.pk])
    assert confirm.status_code == 200
    page = confirm.content.decode()
    assert "3 recipient(s) queued, deferred or held will be cancelled" in page
    assert "Cancel 3 recipient(s)" in page
    assert all(r.state == Recipient.objects.get(pk=r.pk).state for r in acme_rows)

    done = act(operator, "tenant", "purge_queue", [acme.pk], apply="1")
    assert "Acme: 3 recipient(s) cancelled." in page_messages(done)
    states = [Recipient.objects.get(pk=r.pk).state for r in acme_rows]
    assert states == [S.CANCELLED, S.CANCELLED, S.CANCELLED, S.SENDING, S.DELIVERED]
    assert [Recipient.objects.get(pk=r.pk).state for r in globex_rows] == [S.QUEUED, S.DEFERRED]
    assert Event.objects.filter(tenant=acme, type="cancelled").count() == 3
    entry = AuditEntry.objects.get(tenant=acme, action="queue.purged")
    assert entry.actor_label == "operator admin"
    assert entry.detail == {"cancelled": 3, "left": 0}
    assert not AuditEntry.objects.filter(tenant=globex).exists()


def test_queue_actions_are_audited_in_the_tenant(operator, owner):
    acme = owner[0]
    rows = message(acme, domain(acme, "acme.test"), S.QUEUED, S.DELIVERED)
    done = act(operator, "recipient", "hold", [r.pk for r in rows])
    assert "1 recipient(s) held." in page_messages(done)
    entry = AuditEntry.objects.get(tenant=acme, action="message.held")
    assert entry.actor_label == "operator admin"
    assert entry.target == rows[0].message.queue_id
    assert entry.detail == {"recipients": ["r0@dest.test"]}
    act(operator, "recipient", "release", [rows[0].pk])
    act(operator, "recipient", "cancel", [rows[0].pk])
    actions = AuditEntry.objects.filter(tenant=acme).values_list("action", flat=True)
    assert sorted(actions) == ["message.cancelled", "message.held", "message.released"]


def test_domain_actions_are_audited(operator, owner, dns_server):
    from tests.conftest import publish_domain

    acme = owner[0]
    ops = add_domain(tenant=acme, name="ops.test")
    publish_domain(dns_server, "ops.test")
    checked = act(operator, "domain", "check_now", [ops.pk])
    assert "1 domain(s) checked." in page_messages(checked)
    rotated = act(operator, "domain", "rotate_key", [ops.pk])
    assert "1 domain(s) rotating their DKIM key." in page_messages(rotated)
    act(operator, "domain", "rotate_key", [ops.pk])  # refused: one is pending already
    act(operator, "domain", "disable", [ops.pk])
    act(operator, "domain", "enable", [ops.pk])
    entries = list(
        AuditEntry.objects.filter(tenant=acme).order_by("id").values_list("action", "detail")
    )
    assert [action for action, _ in entries] == [
        "domain.checked",
        "domain.key_rotated",
        "domain.disabled",
        "domain.enabled",
    ]
    assert entries[0][1]["verified"] is True and entries[0][1]["score"] > 0
    assert entries[1][1]["algorithm"] == "rsa"
    assert set(AuditEntry.objects.values_list("actor_label", flat=True)) == {"operator admin"}


def test_pinning_a_level_is_audited(operator, owner):
    acme = owner[0]
    standing = Standing.objects.create(tenant=acme, level=2)
    url = reverse("admin:reputation_standing_change", args=[standing.pk])
    response = operator.post(
        url, {"level": 5, "pinned": "on", "pin_reason": "Spam run"}, follow=True
    )
    assert response.status_code == 200
    assert "Acme: level pinned at 5." in page_messages(response)
    entry = AuditEntry.objects.get(tenant=acme, action="reputation.pinned")
    assert entry.actor_label == "operator admin"
    assert entry.detail == {"level": 5, "reason": "Spam run"}
    operator.post(url, {"level": 5, "pin_reason": "Sorted out"})
    entry = AuditEntry.objects.get(tenant=acme, action="reputation.unpinned")
    assert entry.detail == {"level": 1, "reason": "Sorted out"}  # the rates' band: no mail


def unchanged(response) -> dict:
    """What an admin change form posts when nothing is edited (its initial values)."""
    forms = [response.context["adminform"].form]
    for inline in response.context["inline_admin_formsets"]:
        forms += [inline.formset.management_form, *inline.formset.forms]
    data = {}
    for form in forms:
        for name in form.fields:
            key, value = form.add_prefix(name), form[name].value()
            if isinstance(value, datetime):
                data[f"{key}_0"], data[f"{key}_1"] = f"{value:%Y-%m-%d}", f"{value:%H:%M:%S}"
            elif value is True:
                data[key] = "on"
            elif value not in (None, False):
                data[key] = value
    return data


def test_edits_in_change_forms_are_audited(operator, owner):
    from delivery.models import ApiKey
    from reputation.models import Suppression

    acme = owner[0]
    change = reverse("admin:domains_tenant_change", args=[acme.pk])
    form = {**unchanged(operator.get(change)), "plan_rate": 500}
    assert operator.post(change, form).status_code == 302
    entry = AuditEntry.objects.get(tenant=acme, action="tenant.changed")
    assert "plan_rate" in entry.detail["fields"] and entry.actor_label == "operator admin"

    key = ApiKey.objects.get(pk=create_api_key(tenant=acme)[0].pk)
    url = reverse("admin:delivery_apikey_change", args=[key.pk])
    assert operator.post(url, {**unchanged(operator.get(url)), "revoked": "on"}).status_code == 302
    entry = AuditEntry.objects.get(tenant=acme, action="api_key.changed")
    assert "revoked" in entry.detail["fields"] and entry.target == f"sm_{key.prefix}_…"

    add = reverse("admin:reputation_suppression_add")
    form = {**unchanged(operator.get(add)), "tenant": acme.pk, "address": "Bob@Dest.test"}
    assert operator.post(add, {**form, "reason": "manual"}).status_code == 302
    suppression = Suppression.objects.get(tenant=acme)
    assert AuditEntry.objects.filter(tenant=acme, action="suppression.added").exists()
    delete = reverse("admin:reputation_suppression_delete", args=[suppression.pk])
    assert operator.post(delete, {"post": "yes"}).status_code == 302
    entry = AuditEntry.objects.get(tenant=acme, action="suppression.removed")
    assert entry.target == "bob@dest.test (manual)"


# -- the overview page ----------------------------------------------------------------------


@pytest.fixture
def platform_rows(owner, outsider):
    """Two tenants' worth of counts, levels, queue, DNS and webhooks."""
    now = timezone.now()
    today = now.date()
    acme, globex = owner[0], outsider[0]
    acme_domain = domain(
        acme,
        "acme.test",
        dns_verified=True,
        checked_at=now,
        health_score=100,
        status=DomainStatus.VERIFIED,
    )
    globex_domain = domain(globex, "globex.test", checked_at=now, health_score=40)
    DailyStats.objects.create(
        tenant=acme,
        domain=acme_domain,
        day=today,
        accepted=120,
        delivered=110,
        hard_bounced=4,
        complained=1,
    )
    DailyStats.objects.create(
        tenant=globex,
        domain=globex_domain,
        day=today,
        accepted=30,
        delivered=25,
        hard_bounced=3,
        soft_bounced=2,
    )
    DailyStats.objects.create(
        tenant=acme, domain=acme_domain, day=today - timedelta(days=3), accepted=7, delivered=7
    )
    DailyStats.objects.create(
        tenant=acme, domain=acme_domain, day=today - timedelta(days=20), accepted=999
    )  # outside the 14 days
    Standing.objects.create(tenant=globex, level=4)
    message(acme, acme_domain, S.QUEUED, S.QUEUED, S.DEFERRED, next_attempt_at=now)
    message(globex, globex_domain, S.QUEUED, next_attempt_at=now - timedelta(hours=1))
    endpoint = WebhookEndpoint.objects.create(
        tenant=acme, url="https://hooks.test/", secret_encrypted=b"x"
    )
    WebhookDelivery.objects.create(endpoint=endpoint, state=WebhookDeliveryState.FAILED, attempts=9)
    WebhookDelivery.objects.create(
        endpoint=endpoint, state=WebhookDeliveryState.PENDING, attempts=2
    )
    WebhookDelivery.objects.create(endpoint=endpoint, state=WebhookDeliveryState.SUCCEEDED)
    return acme, globex


def test_the_overview_shows_the_platform(operator, platform_rows, django_assert_max_num_queries):
    index = operator.get(reverse("admin:index"))
    assert reverse("admin:overview") in index.content.decode()
    with django_assert_max_num_queries(20):
        response = operator.get(reverse("admin:overview"))
    assert response.status_code == 200
    context = response.context
    days = context["days"]
    assert len(days) == 14 and days[-1].day == timezone.now().date()
    assert (days[-1].accepted, days[-1].delivered, days[-1].hard_bounced) == (150, 135, 7)
    assert (days[-1].soft_bounced, days[-1].complained) == (2, 1)
    assert days[-4].accepted == 7 and sum(d.accepted for d in days) == 157
    levels = {link.label: link.count for link in context["levels"]}
    assert levels["1 excellent"] == 1 and levels["4 restricted"] == 1
    assert levels["restricted or suspended (4–5)"] == 1
    waiting = {link.label: link.count for link in context["waiting"]}
    assert waiting["Queued"] == 3 and waiting["Deferred: will retry"] == 1
    assert context["stuck"].count == 1  # Globex's, due an hour ago
    dns = {link.label: link.count for link in context["dns"]}
    assert dns["failing DNS (any of these)"] == 1 and dns["health score below 70"] == 1
    hooks = [link.count for link in context["webhooks"]]
    assert hooks == [1, 1, 1]
    page = response.content.decode()
    assert '<tr data-day="' in page and "<svg" in page and "<rect" in page
    assert f'href="{reverse("admin:domains_tenant_changelist")}?level=4-5"' in page
    assert f'href="{reverse("admin:delivery_recipient_changelist")}?stuck=yes"' in page
    assert f'href="{reverse("admin:domains_domain_changelist")}?dns=failing"' in page
    # The links lead to the rows counted.
    assert listed(operator.get(changelist("tenant"), {"level": "4-5"})) == ["Globex"]
    assert listed(operator.get(changelist("domain"), {"dns": "failing"})) == ["globex.test"]


def test_only_staff_see_the_overview(owner):
    url = reverse("admin:overview")
    anonymous = Client().get(url)
    assert anonymous.status_code == 302 and "/admin/login/" in anonymous.url
    member = Client()
    member.force_login(owner[1])
    response = member.get(url)
    assert response.status_code == 302 and "/admin/login/" in response.url


# -- bounded queries with many rows ----------------------------------------------------------


def test_changelists_stay_bounded_with_200_rows(operator, owner, django_assert_max_num_queries):
    acme = owner[0]
    tenants = Tenant.objects.bulk_create([Tenant(name=f"T{i:03}") for i in range(200)])
    Standing.objects.bulk_create(
        [Standing(tenant=t, level=1 + i % 5) for i, t in enumerate(tenants)]
    )
    domains = Domain.objects.bulk_create(
        [Domain(tenant=t, name=f"d{i}.test") for i, t in enumerate(tenants)]
    )
    Standing.objects.bulk_create(
        [Standing(tenant=d.tenant, domain=d, level=1 + i % 5) for i, d in enumerate(domains)]
    )
    sending = domain(acme, "acme.test")
    stored = Message.objects.create(
        tenant=acme, domain=sending, source=Source.API, mail_from="a@acme.test", raw=b"x", size=1
    )
    Recipient.objects.bulk_create(
        [
            Recipient(
                message=stored,
                tenant=acme,
                address=f"r{i}@dest.test",
                domain="dest.test",
                state=S.DEFERRED,
                attempts=i % 9,
                last_code=451,
                last_text="later",
            )
            for i in range(200)
        ]
    )
    for model, params in [
        ("tenant", {}),
        ("tenant", {"level": "4-5"}),
        ("domain", {"dns": "failing"}),
        ("recipient", {}),
        ("recipient", {"stuck": "yes"}),
        ("message", {}),
        ("standing", {}),
    ]:
        with django_assert_max_num_queries(15):
            response = operator.get(changelist(model), params)
        assert response.status_code == 200, (model, params)
        assert len(response.context["cl"].result_list) > 0 or params
