"""The tenant's Reputation page (reputation/page.py, chart.py, page_views.py): the level
with its reason and what to do, the rates against the limits, the hourly rate it leaves,
each sending domain with its warm-up, the daily chart, the recent bounces and complaints,
the level changes, the empty state of a new tenant; never another tenant's data, and a
fixed number of queries however much there is to show."""

from __future__ import annotations

import html
import re
from datetime import UTC, date, datetime, timedelta

import pytest
import time_machine
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext, override_settings

from delivery.models import Event, EventType, Message, Recipient, RecipientState, Source
from domains.models import Domain, DomainStatus, Tenant
from reputation.models import DailyStats, Level, LevelChange, Standing, Suppression

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
TODAY = NOW.date()
URL = "/reputation/"


@pytest.fixture(autouse=True)
def frozen_time():
    with time_machine.travel(NOW, tick=False):
        yield


# -- building the data ---------------------------------------------------------------------


def domain_of(tenant: Tenant, name: str, *, verified_days_ago: int | None = 60) -> Domain:
    verified_at = None if verified_days_ago is None else NOW - timedelta(days=verified_days_ago)
    return Domain.objects.create(
        tenant=tenant,
        name=name,
        status=DomainStatus.VERIFIED if verified_at else DomainStatus.PENDING,
        dns_verified=verified_at is not None,
        verified_at=verified_at,
    )


def stats(domain: Domain, day: date, **counts: int) -> DailyStats:
    return DailyStats.objects.create(tenant=domain.tenant, domain=domain, day=day, **counts)


def standing(tenant: Tenant, level: int, reason: str = "", domain=None, **fields) -> Standing:
    return Standing.objects.create(
        tenant=tenant, domain=domain, level=level, reason=reason, since=NOW, **fields
    )


def failure(
    domain: Domain,
    address: str,
    *,
    type: EventType = EventType.BOUNCED,
    at: datetime = NOW,
    code: int | None = 550,
    enhanced: str = "5.1.1",
    text: str = "user unknown",
    **fields,
) -> Event:
    """A message to ``address`` and the bounce (or complaint) event it got."""
    message = Message.objects.create(
        tenant=domain.tenant,
        domain=domain,
        source=Source.API,
        mail_from=f"news@{domain.name}",
        raw=b"Subject: s\r\n\r\nx\r\n",
        size=17,
        created_at=at,
    )
    recipient = Recipient.objects.create(
        message=message,
        tenant=domain.tenant,
        address=address,
        domain=address.rpartition("@")[2],
        state=RecipientState.BOUNCED,
    )
    return Event.objects.create(
        tenant=domain.tenant,
        message=message,
        recipient=recipient,
        type=type,
        created_at=at,
        code=code,
        enhanced=enhanced,
        text=text,
        **fields,
    )


def change(tenant: Tenant, old: int, new: int, reason: str, **fields) -> LevelChange:
    return LevelChange.objects.create(
        tenant=tenant, old_level=old, new_level=new, reason=reason, **fields
    )


# -- reading the page ----------------------------------------------------------------------


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def page_of(user) -> str:
    response = logged_in(user).get(URL)
    assert response.status_code == 200
    return response.content.decode()


def text(markup: str) -> str:
    """What a reader reads: inline tags dropped, others a space; entities decoded, spaces
    collapsed."""
    inline = re.sub(r"</?(?:a|code|em|span|strong|time)\b[^>]*>", "", markup)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", inline)).split())


def section(markup: str, id: str) -> str:
    match = re.search(rf'<section id="{id}".*?</section>', markup, re.S)
    assert match, f"no section {id}"
    return match.group(0)


def rows(markup: str, attribute: str) -> dict[str, str]:
    """Table rows carrying ``data-<attribute>``, as their text, by that attribute."""
    found = re.findall(rf'<tr data-{attribute}="([^"]*)".*?</tr>', markup, re.S)
    bodies = re.findall(rf'<tr data-{attribute}="[^"]*".*?</tr>', markup, re.S)
    return {key: text(body) for key, body in zip(found, bodies, strict=True)}


# -- the level, the rates, the rate it leaves ----------------------------------------------

LEVEL_CASES = [
    # level, delivered, hard, complained, reason, what to do, bounce row, complaint row, rate
    (
        Level.EXCELLENT,
        2000,
        20,
        0,
        "hard bounces 0.99% of 2,020 in 7 days: excellent",
        "Nothing to fix",
        "Hard bounce rate 0.99% 20 hard bounces of 2,020 delivered or bounced under 2%",
        "Complaint rate not counted: fewer than 3 complaints 0 complaints of 2,000 delivered "
        "under 0.05%",
        "1,000 messages an hour (full plan rate.)",
    ),
    (
        Level.WATCH,
        1910,
        90,
        4,
        "hard bounces 4.50% of 2,000 in 7 days: watch",
        "Check your lists: remove addresses that bounce",
        "Hard bounce rate 4.50% 90 hard bounces of 2,000 delivered or bounced under 5% under 4%",
        "Complaint rate 0.209% 4 complaints of 1,910 delivered under 0.3% under 0.1%",
        "500 messages an hour (half the plan rate.)",
    ),
    (
        Level.RESTRICTED,
        1840,
        160,
        0,
        "hard bounces 8.00% of 2,000 in 7 days: restricted",
        "Pause campaigns to old or unconfirmed lists",
        "Hard bounce rate 8.00% 160 hard bounces of 2,000 delivered or bounced under 10% under 5%",
        "Complaint rate not counted: fewer than 3 complaints 0 complaints of 1,840 delivered "
        "under 0.5% under 0.3%",
        "100 messages an hour (a tenth of the plan rate.)",
    ),
    (
        Level.SUSPENDED,
        850,
        150,
        0,
        "hard bounces 15.00% of 1,000 in 7 days: suspended",
        "contact the operator of this platform",
        "Hard bounce rate 15.00% 150 hard bounces of 1,000 delivered or bounced under 10%",
        "Complaint rate not enough mail yet (850 of 1,000 delivered) 0 complaints of 850 "
        "delivered under 0.5%",
        "None: new mail is refused.",
    ),
]


@pytest.mark.parametrize(
    "level,delivered,hard,complained,reason,todo,bounce_row,complaint_row,rate", LEVEL_CASES
)
def test_the_level_its_reason_what_to_do_the_rates_against_the_limits_and_the_rate_left(
    owner, level, delivered, hard, complained, reason, todo, bounce_row, complaint_row, rate
):
    tenant, user = owner
    Tenant.objects.filter(pk=tenant.pk).update(plan_rate=1000)
    domain = domain_of(tenant, "acme.test")
    # Spread over the window; a day before it counts for the chart only, not the rates.
    stats(domain, TODAY, delivered=delivered // 2, hard_bounced=hard // 2, complained=complained)
    stats(domain, TODAY - timedelta(days=6), delivered=delivered - delivered // 2)
    stats(domain, TODAY - timedelta(days=3), hard_bounced=hard - hard // 2)
    stats(domain, TODAY - timedelta(days=7), delivered=5000, hard_bounced=5000)
    standing(tenant, level, reason)

    markup = page_of(user)

    level_part = text(section(markup, "level"))
    assert f"Your level: {level} of 5 · {Level(level).label}" in level_part
    assert reason in level_part
    assert "2026-06-01 10:00 UTC" in level_part  # since
    assert todo in level_part
    rates = text(section(markup, "rates"))
    assert bounce_row in rates and complaint_row in rates
    assert rate in text(section(markup, "sending-rate"))
    assert "Plan rate 1,000 messages an hour" in text(section(markup, "sending-rate"))


def test_a_rate_over_its_levels_limit_says_so_in_words(owner):
    tenant, user = owner
    domain = domain_of(tenant, "acme.test")
    stats(domain, TODAY, delivered=950, hard_bounced=50)
    standing(tenant, Level.GOOD, "hard bounces 1.00% of 1,000 in 7 days: excellent")

    rates = text(section(page_of(user), "rates"))

    assert "Hard bounce rate 5.00% (over level 2’s limit) 50 hard bounces" in rates
    assert "under 4% under 2%" in rates


def test_a_new_tenant_sees_the_five_levels_and_their_limits_explained(owner):
    markup = page_of(owner[1])

    new = text(section(markup, "reputation-new"))
    assert "No mail counted yet" in new
    assert "starts at level 1 (excellent), at the full plan rate of 10,000" in new
    assert "from 100 recipients" in new and "from 1,000 delivered" in new
    levels = rows(section(markup, "reputation-new"), "level")
    assert levels["1"] == (
        "1 · Excellent Hard bounces under 2% and complaints under 0.05%. Full plan rate."
    )
    assert levels["3"] == "3 · Watch Hard bounces under 5% and complaints under 0.3%. " + (
        "Half the plan rate."
    )
    assert levels["5"] == (
        "5 · Suspended Above level 4's limits, or set by an operator. "
        "New mail is refused; queued mail is held."
    )
    for part in ('id="level"', 'id="rates"', 'id="chart"', 'id="events"'):
        assert part not in markup


def test_a_pinned_level_names_the_operators_reason(owner):
    tenant, user = owner
    standing(tenant, Level.RESTRICTED, "Under review", pinned=True, pin_reason="Under review")

    level_part = text(section(page_of(user), "level"))

    assert "Pinned by an operator: Under review." in level_part
    assert "only the operator moves this level" in level_part


def test_a_level_on_its_way_up_says_when_it_rises(owner):
    tenant, user = owner
    standing(tenant, Level.WATCH, "hard bounces", better_since=NOW - timedelta(days=2))

    level_part = text(section(page_of(user), "level"))

    assert "better level’s limits since 2026-05-30 10:00 UTC" in level_part
    assert "goes up one on 2026-06-06 10:00 UTC" in level_part


def test_an_account_suspended_by_an_operator_sends_nothing_whatever_its_level(owner):
    tenant, user = owner
    Tenant.objects.filter(pk=tenant.pk).update(suspended=True)
    standing(tenant, Level.EXCELLENT, "fine")

    sending = text(section(page_of(user), "sending-rate"))

    assert "None: new mail is refused." in sending
    assert "Suspended by an operator" in sending


# -- sending domains -----------------------------------------------------------------------


@override_settings(SENDMSG_WARMUP_DAILY_CAPS=[100, 200, 500])
def test_each_domain_has_its_level_rates_rate_and_warm_up(owner):
    tenant, user = owner
    Tenant.objects.filter(pk=tenant.pk).update(plan_rate=1000)
    standing(tenant, Level.GOOD, "fine")
    old = domain_of(tenant, "old.acme.test")
    stats(old, TODAY, delivered=920, hard_bounced=80)
    standing(tenant, Level.RESTRICTED, "hard bounces 8.00% of 1,000", domain=old)
    new = domain_of(tenant, "new.acme.test", verified_days_ago=1)
    stats(new, TODAY, accepted=42, delivered=40)
    stats(new, TODAY - timedelta(days=1), accepted=90)
    domain_of(tenant, "pending.acme.test", verified_days_ago=None)

    domains = rows(section(page_of(user), "domains"), "domain")

    assert domains["old.acme.test"] == (
        "old.acme.test 4 · Restricted hard bounces 8.00% of 1,000 8.00% "
        "not enough mail yet (920 of 1,000 delivered) 100 an hour Done"
    )
    assert domains["new.acme.test"] == (
        "new.acme.test 1 · Excellent not enough mail yet (40 of 100) "
        "not enough mail yet (40 of 1,000 delivered) 1,000 an hour "
        "Day 2 of 3: up to 200 messages today (42 accepted so far)"
    )
    assert domains["pending.acme.test"].endswith("Starts when the domain is verified")


# -- the chart -----------------------------------------------------------------------------


def test_the_chart_draws_thirty_days_and_repeats_every_number(owner):
    tenant, user = owner
    a, b = domain_of(tenant, "a.acme.test"), domain_of(tenant, "b.acme.test")
    stats(a, date(2026, 5, 20), accepted=600, delivered=590, hard_bounced=10, complained=1)
    stats(b, date(2026, 5, 20), accepted=400, delivered=390, hard_bounced=10, soft_bounced=3)
    stats(a, TODAY, accepted=50, delivered=50)
    stats(a, TODAY - timedelta(days=30), accepted=777777)  # a day before the chart

    chart = section(page_of(user), "chart")

    assert '<svg viewBox="0 0 640 270"' in chart and 'role="img"' in chart
    assert '<title id="rep-chart-title">Mail per day over the last 30 days</title>' in chart
    summary = (
        "30 days, 2026-05-03 to 2026-06-01 (UTC): 1,050 accepted, 1,030 delivered, "
        "20 hard bounces, 1 complaints. Most accepted on 2026-05-20 (1,000). "
        "Most hard bounces on 2026-05-20 (20)."
    )
    assert f'<desc id="rep-chart-desc">{summary}</desc>' in chart
    assert (
        "<title>2026-05-20: 1,000 accepted, 980 delivered, 0 deferred, 20 hard bounces, "
        "3 soft bounces, 1 complaints</title>" in chart
    )
    assert chart.count("<rect ") == 30 and chart.count("<polyline ") == 4
    days = rows(chart, "day")
    assert list(days)[0] == "2026-05-03" and list(days)[-1] == "2026-06-01" and len(days) == 30
    assert days["2026-05-20"] == "2026-05-20 1,000 980 0 20 3 1"
    assert days["2026-06-01"] == "2026-06-01 50 50 0 0 0 0"
    assert days["2026-05-21"] == "2026-05-21 0 0 0 0 0 0"
    assert "777" not in chart
    # The scales are round: volume up to 1,000, trouble up to 20.
    assert ">1,000</text>" in chart and ">20</text>" in chart


# -- recent bounces and complaints, level changes, suppressions ------------------------------


def test_recent_bounces_and_complaints_with_replies_classification_and_message_links(owner):
    tenant, user = owner
    domain = domain_of(tenant, "acme.test")
    standing(tenant, Level.GOOD, "fine")
    bounce = failure(
        domain,
        "gone@dest.test",
        at=NOW - timedelta(hours=2),
        text="5.1.1 <gone@dest.test>: Recipient address rejected",
        bounce_class="hard",
        reason="mailbox_unknown",
    )
    complaint = failure(
        domain,
        "angry@dest.test",
        type=EventType.COMPLAINED,
        at=NOW - timedelta(hours=1),
        code=None,
        enhanced="",
        text="",
    )
    failure(domain, "fine@dest.test", type=EventType.DELIVERED, code=250, enhanced="2.0.0")
    failure(domain, "ancient@dest.test", at=NOW - timedelta(days=31))

    events = section(page_of(user), "events")

    listed = [text(body) for body in re.findall(r"<tr data-event=.*?</tr>", events, re.S)]
    assert listed == [
        "2026-06-01 09:00 Complaint angry@dest.test – – "
        f"{complaint.message.queue_id} (the message to angry@dest.test)",
        "2026-06-01 08:00 Bounce gone@dest.test 550 5.1.1 5.1.1 <gone@dest.test>: Recipient "
        "address rejected The mailbox does not exist Hard: the address does not take mail; "
        f"it is suppressed {bounce.message.queue_id} (the message to gone@dest.test)",
    ]
    assert f'href="/messages/{bounce.message.queue_id}/"' in events
    assert f'href="/messages/{complaint.message.queue_id}/"' in events


def test_only_the_latest_twenty_events_and_changes_are_listed(owner):
    tenant, user = owner
    domain = domain_of(tenant, "acme.test")
    for n in range(25):
        failure(domain, f"r{n}@dest.test", at=NOW - timedelta(minutes=n))
        change(tenant, 1, 2, f"change number {n}", created_at=NOW - timedelta(minutes=n))

    markup = page_of(user)

    events = section(markup, "events")
    assert events.count("<tr data-event=") == 20
    assert "r0@dest.test" in events and "r19@dest.test" in events
    assert "r20@dest.test" not in events
    changes = section(markup, "changes")
    assert changes.count("<tr data-change=") == 20
    assert "change number 19<" in changes and "change number 20<" not in changes


def test_level_changes_with_their_reasons_and_who_made_them(owner, django_user_model):
    tenant, user = owner
    domain = domain_of(tenant, "news.acme.test")
    operator = django_user_model.objects.create_user("ops@platform.test", is_staff=True)
    standing(tenant, Level.SUSPENDED, "pinned")
    change(
        tenant,
        1,
        3,
        "hard bounces 4.50% of 2,000 in 7 days: watch",
        created_at=NOW - timedelta(days=2),
    )
    change(tenant, 1, 4, "hard bounces 9.00% of 500", domain=domain, created_at=NOW - timedelta(1))
    change(tenant, 3, 5, "pinned by an operator: spam trap hits", actor=operator, pinned=True)

    changes = section(page_of(user), "changes")

    assert list(rows(changes, "change").values()) == [
        "2026-06-01 10:00 Account 3 watch → 5 suspended pinned by an operator: spam trap hits "
        "An operator (pinned)",
        "2026-05-31 10:00 news.acme.test 1 excellent → 4 restricted hard bounces 9.00% of 500 "
        "The rates",
        "2026-05-30 10:00 Account 1 excellent → 3 watch hard bounces 4.50% of 2,000 in 7 days: "
        "watch The rates",
    ]
    assert "ops@platform.test" not in changes


def test_the_suppression_list_is_linked_with_its_count(owner):
    tenant, user = owner
    standing(tenant, Level.EXCELLENT, "fine")
    for address in ("a@dest.test", "b@dest.test", "c@dest.test"):
        Suppression.objects.create(tenant=tenant, address=address, reason="hard_bounce")

    part = section(page_of(user), "suppressions")

    assert "3 addresses on your suppression list" in text(part)
    assert 'href="/suppressions/"' in part


def test_the_page_is_in_the_navigation_and_marked_current(owner):
    markup = page_of(owner[1])

    assert '<a href="/reputation/" aria-current="page">Reputation</a>' in markup
    assert '<main id="main"' in markup and "<h1>Reputation</h1>" in markup


# -- isolation and login -------------------------------------------------------------------


def test_a_tenant_never_sees_another_tenants_standing_stats_events_or_changes(owner, outsider):
    acme, acme_user = owner
    globex, globex_user = outsider
    acme_domain = domain_of(acme, "acme.test")
    globex_domain = domain_of(globex, "globex.test")
    standing(acme, Level.GOOD, "acme reason")
    standing(globex, Level.SUSPENDED, "globex reason")
    standing(globex, Level.RESTRICTED, "globex domain reason", domain=globex_domain)
    stats(acme_domain, TODAY, accepted=111, delivered=111)
    stats(globex_domain, TODAY, accepted=98765, delivered=98000, hard_bounced=765)
    failure(acme_domain, "acme-bounce@dest.test")
    failure(globex_domain, "globex-bounce@dest.test", type=EventType.COMPLAINED)
    change(acme, 1, 2, "acme change")
    change(globex, 4, 5, "globex change")
    Suppression.objects.create(tenant=globex, address="x@dest.test", reason="manual")
    Suppression.objects.create(tenant=globex, address="y@dest.test", reason="manual")

    mine = page_of(acme_user)
    theirs = page_of(globex_user)

    for marker in ("globex", "98,765", "98765", "765 hard"):
        assert marker not in mine, marker
    assert "Your level: 2 of 5 · Good" in text(section(mine, "level"))
    assert "Your level: 5 of 5 · Suspended" in text(section(theirs, "level"))
    assert "acme reason" in mine and "acme-bounce@dest.test" in mine and "acme change" in mine
    assert "0 addresses on your suppression list" in text(section(mine, "suppressions"))
    assert rows(mine, "day")["2026-06-01"] == "2026-06-01 111 111 0 0 0 0"
    for marker in ("acme", "111"):
        assert marker not in text(section(theirs, "chart")) + text(section(theirs, "events"))
    assert "acme" not in theirs.split("<main", 1)[1]


def test_anonymous_users_are_sent_to_login():
    response = Client().get(URL)

    assert response.status_code == 302 and response.url == f"/login/?next={URL}"


def test_a_user_without_a_tenant_is_told_so(db, django_user_model):
    user = django_user_model.objects.create_user("nobody@example.test")

    assert "No tenant yet" in page_of(user)


# -- cost ----------------------------------------------------------------------------------


def fill(tenant: Tenant, *, domains: int, days: int, events: int, changes: int) -> None:
    standing(tenant, Level.WATCH, "hard bounces")
    for d in range(domains):
        domain = domain_of(tenant, f"d{d}.{tenant.name.lower()}.test")
        standing(tenant, Level.GOOD, "fine", domain=domain)
        DailyStats.objects.bulk_create(
            DailyStats(
                tenant=tenant,
                domain=domain,
                day=TODAY - timedelta(days=n),
                accepted=100 + n,
                delivered=95,
                hard_bounced=5,
                complained=1,
            )
            for n in range(days)
        )
        for n in range(events):
            failure(domain, f"r{n}@dest.test", at=NOW - timedelta(minutes=n), bounce_class="hard")
    for n in range(changes):
        change(tenant, 2, 3, f"change {n}", domain=domain if n % 2 else None)
    Suppression.objects.create(tenant=tenant, address="s@dest.test", reason="manual")


def queries_for(user) -> int:
    client = logged_in(user)
    with CaptureQueriesContext(connection) as captured:
        assert client.get(URL).status_code == 200
    return len(captured.captured_queries)


def test_the_page_costs_a_fixed_number_of_queries(owner, outsider, django_assert_max_num_queries):
    fill(owner[0], domains=1, days=1, events=1, changes=1)
    fill(outsider[0], domains=4, days=30, events=20, changes=20)

    small = queries_for(owner[1])
    large = queries_for(outsider[1])

    assert large == small
    client = logged_in(outsider[1])
    with django_assert_max_num_queries(20):
        markup = client.get(URL).content.decode()
    assert markup.count("<tr data-domain=") == 4
    assert section(markup, "events").count("<tr data-event=") == 20
