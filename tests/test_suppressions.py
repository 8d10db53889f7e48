"""The suppression list as tenants manage it (API and dashboard) and operators see it (admin):
add, search, remove, import, export; what a change does to the next send; and that another
tenant never sees or touches an entry."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from delivery.credentials import create_api_key
from delivery.models import Event, Recipient
from reputation.models import Suppression, SuppressionReason
from tests.conftest import wait_until

pytestmark = pytest.mark.django_db

LIST = "/api/v1/suppressions/"
IMPORT = "/api/v1/suppressions/import/"
EXPORT = "/api/v1/suppressions/export/"


def api(tenant) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {create_api_key(tenant=tenant)[1]}")
    return client


def logged_in(user, *, csrf: bool = False) -> Client:
    client = Client(enforce_csrf_checks=csrf)
    client.force_login(user)
    return client


def listed(tenant) -> dict[str, tuple[str, str]]:
    """The tenant's list as stored: address -> (reason, note)."""
    return {s.address: (s.reason, s.note) for s in Suppression.objects.filter(tenant=tenant)}


def suppress(tenant, address: str, reason=SuppressionReason.MANUAL, note: str = "", **kw):
    return Suppression.objects.create(
        tenant=tenant, address=address, reason=reason, note=note, **kw
    )


def error_of(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert error["code"] == code, error
    return error


def csv_upload(text: str | bytes, name: str = "list.csv") -> SimpleUploadedFile:
    data = text.encode() if isinstance(text, str) else text
    return SimpleUploadedFile(name, data, content_type="text/csv")


def rows_of(content: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(content.decode())))


def streamed(response) -> bytes:
    assert response.status_code == 200, response
    return b"".join(response.streaming_content)


# -- API: one address -----------------------------------------------------------------------


def test_add_stores_the_address_as_the_gate_compares_it(owner):
    client = api(owner[0])
    response = client.post(
        LIST, {"address": "  Alice@Bücher.Example ", "note": "asked by phone"}, format="json"
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["address"] == "alice@xn--bcher-kva.example"
    assert (body["reason"], body["note"]) == ("manual", "asked by phone")
    assert listed(owner[0]) == {"alice@xn--bcher-kva.example": ("manual", "asked by phone")}


def test_adding_a_listed_address_again_is_200_and_keeps_the_entry(owner):
    suppress(owner[0], "bounced@dest.test", SuppressionReason.HARD_BOUNCE, "550 5.1.1")
    response = api(owner[0]).post(
        LIST, {"address": "BOUNCED@dest.test", "note": "mine"}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["reason"] == "hard_bounce" and response.json()["note"] == "550 5.1.1"
    assert listed(owner[0]) == {"bounced@dest.test": ("hard_bounce", "550 5.1.1")}


@pytest.mark.parametrize(
    "address",
    [
        "nope",
        "@dest.test",
        "alice@",
        "alice@localhost",
        "a b@dest.test",
        "a..b@dest.test",
        "x" * 65 + "@dest.test",
    ],
)
def test_a_bad_address_is_400_and_adds_nothing(owner, address):
    error = error_of(
        api(owner[0]).post(LIST, {"address": address}, format="json"), 400, "invalid_address"
    )
    assert error["field"] == "address"
    assert not Suppression.objects.exists()


def test_a_bad_note_is_400(owner):
    client = api(owner[0])
    long = client.post(LIST, {"address": "a@dest.test", "note": "n" * 201}, format="json")
    assert error_of(long, 400, "invalid_request")["field"] == "note"
    broken = client.post(LIST, {"address": "a@dest.test", "note": "a\nb"}, format="json")
    assert error_of(broken, 400, "invalid_request")["field"] == "note"
    assert not Suppression.objects.exists()


def test_list_searches_filters_and_pages(owner):
    tenant = owner[0]
    suppress(tenant, "alice@dest.test", SuppressionReason.HARD_BOUNCE)
    suppress(tenant, "bob@dest.test", SuppressionReason.COMPLAINT)
    suppress(tenant, "alice@other.test")
    client = api(tenant)

    everything = client.get(LIST).json()
    assert everything["count"] == 3
    assert [r["address"] for r in everything["results"]] == [
        "alice@other.test",
        "bob@dest.test",
        "alice@dest.test",
    ]  # newest first
    assert set(everything["results"][0]) == {"address", "reason", "note", "created_at"}

    found = client.get(LIST, {"q": "ALICE"}).json()["results"]
    assert {r["address"] for r in found} == {"alice@dest.test", "alice@other.test"}
    complaints = client.get(LIST, {"reason": "complaint"}).json()["results"]
    assert [r["address"] for r in complaints] == ["bob@dest.test"]
    both = client.get(LIST, {"q": "alice", "reason": "hard_bounce"}).json()["results"]
    assert [r["address"] for r in both] == ["alice@dest.test"]

    second = client.get(LIST, {"limit": 2, "offset": 2}).json()
    assert [r["address"] for r in second["results"]] == ["alice@dest.test"]
    assert second["previous"] and second["next"] is None

    error = error_of(client.get(LIST, {"reason": "spam"}), 400, "invalid_request")
    assert error["field"] == "reason"


def test_read_and_delete_by_address_in_any_case(owner):
    suppress(owner[0], "alice@dest.test", SuppressionReason.COMPLAINT)
    client = api(owner[0])
    assert client.get(f"{LIST}Alice@Dest.test/").json()["reason"] == "complaint"
    assert client.delete(f"{LIST}ALICE@dest.test/").status_code == 204
    assert not Suppression.objects.exists()
    error = error_of(client.delete(f"{LIST}alice@dest.test/"), 404, "not_found")
    assert "alice@dest.test" in error["message"]
    error_of(client.get(f"{LIST}alice@dest.test/"), 404, "not_found")


def test_an_address_with_a_slash_is_reachable_encoded(owner):
    client = api(owner[0])
    assert client.post(LIST, {"address": "dept/sales@dest.test"}, format="json").status_code == 201
    assert client.get(f"{LIST}dept%2Fsales@dest.test/").json()["address"] == "dept/sales@dest.test"
    assert client.delete(f"{LIST}dept%2Fsales@dest.test/").status_code == 204
    assert not Suppression.objects.exists()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", LIST),
        ("post", LIST),
        ("get", f"{LIST}alice@dest.test/"),
        ("delete", f"{LIST}alice@dest.test/"),
        ("post", IMPORT),
        ("get", EXPORT),
    ],
)
def test_every_route_needs_a_key(owner, method, path):
    suppress(owner[0], "alice@dest.test")
    response = getattr(APIClient(), method)(path, format="json")
    error_of(response, 401, "unauthenticated")
    assert listed(owner[0]) == {"alice@dest.test": ("manual", "")}


# -- API: import ----------------------------------------------------------------------------

MIXED_CSV = (
    "Email,Note,Source\r\n"  # line 1: a header, columns in any order, extra ones ignored
    "new@dest.test,asked us,crm\r\n"  # 2: added with its note
    "known@dest.test,,crm\r\n"  # 3: listed already
    "not-an-address,,crm\r\n"  # 4: invalid
    "\r\n"  # 5: blank, skipped
    "NEW@dest.test,again,crm\r\n"  # 6: earlier in this file
    "second@Bücher.example,,crm\r\n"  # 7: added, IDNA
    "bad@nodot,,crm\r\n"  # 8: invalid
)


def test_import_csv_adds_the_valid_rows_and_reports_the_others_by_line(owner):
    tenant = owner[0]
    suppress(tenant, "known@dest.test", SuppressionReason.COMPLAINT)
    response = api(tenant).post(IMPORT, {"file": csv_upload(MIXED_CSV)}, format="multipart")
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["added"], body["already_present"], body["invalid"]) == (2, 2, 2)
    assert [(r["row"], r["value"]) for r in body["invalid_rows"]] == [
        (4, "not-an-address"),
        (8, "bad@nodot"),
    ]
    assert all(r["reason"] for r in body["invalid_rows"])
    assert listed(tenant) == {
        "known@dest.test": ("complaint", ""),
        "new@dest.test": ("manual", "asked us"),
        "second@xn--bcher-kva.example": ("manual", ""),
    }


def test_import_a_json_list_of_addresses_and_objects(owner):
    items = [
        "one@dest.test",
        {"address": "two@dest.test", "note": "unsubscribed by letter"},
        {"email": "three@dest.test"},
        42,
        "one@dest.test",
    ]
    body = api(owner[0]).post(IMPORT, items, format="json").json()
    assert (body["added"], body["already_present"], body["invalid"]) == (2, 1, 2)
    assert [r["row"] for r in body["invalid_rows"]] == [3, 4]
    assert listed(owner[0]) == {
        "one@dest.test": ("manual", ""),
        "two@dest.test": ("manual", "unsubscribed by letter"),
    }


def test_import_a_plain_csv_body_without_header(owner):
    response = api(owner[0]).post(
        IMPORT, "a@dest.test\nb@dest.test,a note\n", content_type="text/csv"
    )
    assert response.status_code == 200, response.content
    assert response.json()["added"] == 2
    assert listed(owner[0]) == {"a@dest.test": ("manual", ""), "b@dest.test": ("manual", "a note")}


def test_an_excel_file_with_bom_and_semicolons_imports(owner):
    data = "\ufeffaddress;note\r\nc@dest.test;from Excel\r\n".encode()
    response = api(owner[0]).post(IMPORT, {"file": csv_upload(data)}, format="multipart")
    assert response.json()["added"] == 1
    assert listed(owner[0]) == {"c@dest.test": ("manual", "from Excel")}


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ("address\nok@dest.test\ncafé@dest.test\n".encode("latin-1"), "UTF-8"),
        (b"name,phone\nok@dest.test,1\n", "address"),
        (b'address\nok@dest.test\n"' + b"x" * 140_000 + b'"\n', "Line 3"),
    ],
)
def test_an_unreadable_file_is_400_and_changes_nothing(owner, data, words):
    response = api(owner[0]).post(IMPORT, {"file": csv_upload(data)}, format="multipart")
    error = error_of(response, 400, "invalid_request")
    assert words in error["message"] and error["field"] == "file"
    assert not Suppression.objects.exists()  # not even the good line before the bad one


def test_an_import_without_a_file_says_what_to_send(owner):
    error = error_of(
        api(owner[0]).post(IMPORT, {"addresses": []}, format="json"), 400, "invalid_request"
    )
    assert "JSON array" in error["message"] and error["field"] == "file"


def test_an_import_over_the_row_limit_is_413_and_adds_nothing(owner, settings):
    settings.SENDMSG_SUPPRESSION_IMPORT_ROWS = 3
    client = api(owner[0])
    four = "".join(f"u{i}@dest.test\n" for i in range(4))
    error = error_of(
        client.post(IMPORT, {"file": csv_upload(four)}, format="multipart"), 413, "import_too_large"
    )
    assert "3 rows" in error["message"]
    error_of(
        client.post(IMPORT, [f"u{i}@dest.test" for i in range(4)], format="json"),
        413,
        "import_too_large",
    )
    three = "".join(f"u{i}@dest.test\n" for i in range(3))
    assert not Suppression.objects.exists()
    assert client.post(IMPORT, {"file": csv_upload(three)}, format="multipart").json()["added"] == 3


def test_an_import_over_the_byte_limit_is_413(owner, settings):
    settings.SENDMSG_SUPPRESSION_IMPORT_ROWS = 3  # so 3 KiB
    padded = "address,note\n" + "a@dest.test," + "n" * 4000 + "\n"
    response = api(owner[0]).post(IMPORT, {"file": csv_upload(padded)}, format="multipart")
    error_of(response, 413, "import_too_large")
    body = api(owner[0]).post(IMPORT, padded, content_type="text/csv")
    error_of(body, 413, "import_too_large")
    assert not Suppression.objects.exists()


# -- API: export ----------------------------------------------------------------------------


def test_export_is_csv_by_address_and_imports_back(owner, outsider):
    tenant = owner[0]
    when = datetime(2025, 3, 1, 12, 30, tzinfo=UTC)
    suppress(tenant, "zed@dest.test", SuppressionReason.UNSUBSCRIBE, created_at=when)
    suppress(tenant, "=aa@dest.test", note="=HYPERLINK(1)", created_at=when)
    suppress(tenant, "amy@dest.test", SuppressionReason.HARD_BOUNCE, '550, "no"', created_at=when)
    response = api(tenant).get(EXPORT)
    assert response["Content-Type"].startswith("text/csv")
    assert 'filename="suppressions.csv"' in response["Content-Disposition"]
    content = streamed(response)
    assert rows_of(content) == [
        ["address", "reason", "note", "created_at"],
        ["'=aa@dest.test", "manual", "'=HYPERLINK(1)", "2025-03-01T12:30:00Z"],
        ["amy@dest.test", "hard_bounce", '550, "no"', "2025-03-01T12:30:00Z"],
        ["zed@dest.test", "unsubscribe", "", "2025-03-01T12:30:00Z"],
    ]
    only = rows_of(streamed(api(tenant).get(EXPORT, {"reason": "hard_bounce"})))
    assert [row[0] for row in only[1:]] == ["amy@dest.test"]

    # another tenant imports the file as it came: same addresses and notes, reason manual
    moved = api(outsider[0]).post(IMPORT, {"file": csv_upload(content)}, format="multipart")
    assert moved.json()["added"] == 3
    assert listed(outsider[0]) == {
        "=aa@dest.test": ("manual", "=HYPERLINK(1)"),
        "amy@dest.test": ("manual", '550, "no"'),
        "zed@dest.test": ("manual", ""),
    }


def test_export_streams_more_than_one_chunk(owner):
    Suppression.objects.bulk_create(
        Suppression(tenant=owner[0], address=f"u{i:05}@dest.test", reason="manual")
        for i in range(2500)
    )
    rows = rows_of(streamed(api(owner[0]).get(EXPORT)))
    assert len(rows) == 2501
    assert [row[0] for row in rows[1:]] == [f"u{i:05}@dest.test" for i in range(2500)]


# -- tenant isolation -----------------------------------------------------------------------


def test_another_tenant_never_sees_or_changes_an_entry_through_the_api(owner, outsider):
    suppress(owner[0], "alice@dest.test", SuppressionReason.COMPLAINT, "kept")
    intruder = api(outsider[0])
    for method in ("get", "delete"):
        response = getattr(intruder, method)(f"{LIST}alice@dest.test/")
        error_of(response, 404, "not_found")
    assert intruder.get(LIST).json()["results"] == []
    assert intruder.get(LIST, {"q": "alice"}).json()["count"] == 0
    assert rows_of(streamed(intruder.get(EXPORT))) == [["address", "reason", "note", "created_at"]]
    # Adding or importing the same address makes the outsider's own entry only.
    assert intruder.post(LIST, {"address": "alice@dest.test", "note": "x"}).status_code == 201
    assert intruder.post(IMPORT, ["alice@dest.test"], format="json").json()["added"] == 0
    assert intruder.delete(f"{LIST}alice@dest.test/").status_code == 204
    assert listed(owner[0]) == {"alice@dest.test": ("complaint", "kept")}
    assert listed(outsider[0]) == {}


def test_another_tenant_gets_404_on_the_dashboard_and_changes_nothing(owner, outsider):
    entry = suppress(owner[0], "alice@dest.test", SuppressionReason.HARD_BOUNCE)
    intruder = logged_in(outsider[1])
    url = reverse("suppressions:remove", args=[entry.pk])
    assert intruder.get(url).status_code == 404
    assert intruder.post(url).status_code == 404
    assert logged_in(owner[1]).get(url).status_code == 200  # the URL exists for its owner
    assert "alice@dest.test" not in intruder.get(reverse("suppressions:list")).content.decode()
    exported = b"".join(intruder.get(reverse("suppressions:export")).streaming_content)
    assert b"alice@dest.test" not in exported
    assert Suppression.objects.filter(pk=entry.pk).exists()


# -- dashboard ------------------------------------------------------------------------------


def test_anonymous_is_sent_to_login_from_every_page(owner):
    entry = suppress(owner[0], "alice@dest.test")
    client = Client()
    for method, name, args in [
        ("get", "list", []),
        ("post", "list", []),
        ("post", "import", []),
        ("get", "export", []),
        ("get", "remove", [entry.pk]),
        ("post", "remove", [entry.pk]),
    ]:
        response = getattr(client, method)(reverse(f"suppressions:{name}", args=args))
        assert response.status_code == 302 and response.url.startswith("/login/"), name
    assert Suppression.objects.filter(pk=entry.pk).exists()


def test_the_empty_page_explains_the_list_and_is_in_the_nav(owner):
    page = logged_in(owner[1]).get(reverse("suppressions:list")).content.decode()
    assert 'href="/suppressions/" aria-current="page">Suppressions</a>' in page
    assert "Your suppression list is empty" in page
    assert "hard bounce" in page and "spam" in page and "unsubscribe" in page
    assert "Export all as CSV" not in page  # nothing to export yet


def test_the_page_lists_searches_filters_and_pages(owner):
    tenant = owner[0]
    suppress(tenant, "bob@dest.test", SuppressionReason.COMPLAINT, "reported spam")
    Suppression.objects.bulk_create(
        Suppression(tenant=tenant, address=f"user{i:02}@dest.test", reason="manual")
        for i in range(55)
    )
    client = logged_in(owner[1])
    first = client.get(reverse("suppressions:list")).content.decode()
    assert "(56)" in first and "Page 1 of 2" in first and "Export all as CSV" in first
    found = client.get(reverse("suppressions:list"), {"q": "BOB"}).content.decode()
    assert "bob@dest.test" in found and "reported spam" in found and "Spam complaint" in found
    assert "user01@dest.test" not in found and "Export the 1 found as CSV" in found
    complaints = client.get(reverse("suppressions:list"), {"reason": "complaint"}).content
    assert b"bob@dest.test" in complaints and b"user01" not in complaints
    nothing = client.get(reverse("suppressions:list"), {"q": "carol"}).content.decode()
    assert "No address on your list matches this search" in nothing
    second = client.get(reverse("suppressions:list"), {"page": 2}).content.decode()
    assert "Page 2 of 2" in second and second.count('data-address="') == 6


def test_add_through_the_form(owner):
    client = logged_in(owner[1])
    response = client.post(
        reverse("suppressions:list"), {"address": "Carol@Dest.test", "note": "left"}, follow=True
    )
    assert "carol@dest.test added" in response.content.decode()
    assert listed(owner[0]) == {"carol@dest.test": ("manual", "left")}
    again = client.post(reverse("suppressions:list"), {"address": "carol@dest.test"}, follow=True)
    assert "was on the list already" in again.content.decode()
    bad = client.post(reverse("suppressions:list"), {"address": "carol"})
    assert bad.status_code == 400 and "is not an email address" in bad.content.decode()
    assert len(listed(owner[0])) == 1


def test_remove_asks_first_then_removes(owner):
    entry = suppress(owner[0], "dan@dest.test", SuppressionReason.HARD_BOUNCE, "550 5.1.1")
    client = logged_in(owner[1], csrf=True)
    url = reverse("suppressions:remove", args=[entry.pk])
    page = client.get(url).content.decode()
    assert "Remove <code>dan@dest.test</code>" in page and "bounce or complaint rate" in page
    assert Suppression.objects.filter(pk=entry.pk).exists()  # asking removes nothing
    assert client.post(url).status_code == 403  # no CSRF token
    assert Suppression.objects.filter(pk=entry.pk).exists()
    token = client.get(url).context["csrf_token"]
    done = client.post(url, {"csrfmiddlewaretoken": str(token)}, follow=True)
    assert "dan@dest.test removed" in done.content.decode()
    assert not Suppression.objects.exists()


def test_import_through_the_form_shows_the_summary_once(owner):
    suppress(owner[0], "known@dest.test")
    client = logged_in(owner[1])
    response = client.post(
        reverse("suppressions:import"), {"file": csv_upload(MIXED_CSV, "crm.csv")}, follow=True
    )
    page = response.content.decode()
    assert "Import of crm.csv" in page
    assert "<strong>2</strong> added" in page and "<strong>2</strong> not valid" in page
    assert '<th scope="row">4</th><td><code>not-an-address</code>' in page
    assert set(listed(owner[0])) == {
        "known@dest.test",
        "new@dest.test",
        "second@xn--bcher-kva.example",
    }
    assert "Import of crm.csv" not in client.get(reverse("suppressions:list")).content.decode()


def test_a_refused_import_says_nothing_was_imported(owner, settings):
    settings.SENDMSG_SUPPRESSION_IMPORT_ROWS = 1
    client = logged_in(owner[1])
    response = client.post(
        reverse("suppressions:import"), {"file": csv_upload("a@dest.test\nb@dest.test\n")}
    )
    assert response.status_code == 413
    assert "Nothing was imported" in response.content.decode()
    missing = client.post(reverse("suppressions:import"), {})
    assert missing.status_code == 400 and "Choose a CSV file" in missing.content.decode()
    assert not Suppression.objects.exists()


def test_export_from_the_page_follows_the_search(owner):
    suppress(owner[0], "eve@dest.test", SuppressionReason.UNSUBSCRIBE)
    suppress(owner[0], "fay@dest.test")
    client = logged_in(owner[1])
    response = client.get(reverse("suppressions:export"))
    assert response["Content-Disposition"] == 'attachment; filename="suppressions.csv"'
    assert [row[:2] for row in rows_of(streamed(response))] == [
        ["address", "reason"],
        ["eve@dest.test", "unsubscribe"],
        ["fay@dest.test", "manual"],
    ]
    only = rows_of(streamed(client.get(reverse("suppressions:export"), {"q": "fay"})))
    assert [row[0] for row in only] == ["address", "fay@dest.test"]


# -- the operators' admin -------------------------------------------------------------------


def test_admin_shows_every_tenants_entries_by_tenant_reason_and_date(admin_user, owner, outsider):
    suppress(owner[0], "alice@dest.test", SuppressionReason.HARD_BOUNCE)
    suppress(outsider[0], "bob@dest.test", SuppressionReason.COMPLAINT)
    client = logged_in(admin_user)
    url = reverse("admin:reputation_suppression_changelist")
    page = client.get(url).content.decode()
    assert "alice@dest.test" in page and "bob@dest.test" in page
    assert "Acme" in page and "Globex" in page
    by_tenant = client.get(url, {"q": "Globex"}).content.decode()
    assert "bob@dest.test" in by_tenant and "alice@dest.test" not in by_tenant
    by_reason = client.get(url, {"reason__exact": "hard_bounce"}).content.decode()
    assert "alice@dest.test" in by_reason and "bob@dest.test" not in by_reason
    this_year = client.get(url, {"created_at__year": datetime.now(UTC).year})
    assert this_year.status_code == 200 and "alice@dest.test" in this_year.content.decode()


def test_an_operators_entry_is_stored_as_the_gate_compares_it(admin_user, owner):
    client = logged_in(admin_user)
    add = reverse("admin:reputation_suppression_add")
    fields = {
        "tenant": owner[0].pk,
        "reason": "manual",
        "note": "",
        "created_at_0": "2025-01-01",
        "created_at_1": "00:00:00",
    }
    assert client.post(add, {**fields, "address": "Ops@Bücher.example"}).status_code == 302
    assert set(listed(owner[0])) == {"ops@xn--bcher-kva.example"}
    refused = client.post(add, {**fields, "address": "not an address"})
    assert refused.status_code == 200 and "is not an email address" in refused.content.decode()


# -- what it does to sending ----------------------------------------------------------------


def send(client: APIClient, to: str) -> Recipient:
    response = client.post(
        "/api/v1/send/",
        {"from": {"email": "news@acme.test"}, "to": [to], "subject": "list", "text": "x"},
        format="json",
    )
    assert response.status_code == 201, response.content
    return Recipient.objects.get(pk=response.json()["recipients"][0]["id"])


def delivered(recipient: Recipient) -> bool:
    recipient.refresh_from_db()
    return recipient.state == "delivered"


@pytest.mark.peers
@pytest.mark.django_db(transaction=True)
def test_an_address_added_by_api_is_not_sent_to_and_sent_to_again_once_removed(
    platform, verified_domain, mx
):
    client = api(verified_domain.tenant)
    assert client.post(LIST, {"address": "Grace@Dest.test"}, format="json").status_code == 201

    held_back = send(client, "grace@dest.test")
    assert held_back.state == "suppressed"
    assert list(Event.objects.filter(recipient=held_back).values_list("type", flat=True)) == [
        "suppressed"
    ]

    assert client.delete(f"{LIST}grace@dest.test/").status_code == 204
    sent = send(client, "grace@dest.test")
    wait_until(lambda: delivered(sent))
    assert [m.rcpt_tos for m in mx.messages] == [["grace@dest.test"]]  # the second only
    held_back.refresh_from_db()
    assert held_back.state == "suppressed"


@pytest.mark.peers
@pytest.mark.django_db(transaction=True)
def test_an_address_imported_on_the_dashboard_is_suppressed_until_removed_there(
    platform, verified_domain, mx, owner
):
    page = logged_in(owner[1])
    page.post(reverse("suppressions:import"), {"file": csv_upload("address\nheidi@dest.test\n")})
    client = api(verified_domain.tenant)
    assert send(client, "heidi@dest.test").state == "suppressed"

    entry = Suppression.objects.get(tenant=owner[0], address="heidi@dest.test")
    page.post(reverse("suppressions:remove", args=[entry.pk]))
    sent = send(client, "heidi@dest.test")
    wait_until(lambda: delivered(sent))
    assert [m.rcpt_tos for m in mx.messages] == [["heidi@dest.test"]]


def test_the_schema_documents_every_route():
    paths = APIClient().get("/api/v1/schema/", {"format": "json"}).json()["paths"]
    assert set(paths[LIST]) == {"get", "post"}
    assert set(paths["/api/v1/suppressions/{address}/"]) == {"get", "delete"}
    assert {"413", "200"} <= set(paths[IMPORT]["post"]["responses"])
    assert "text/csv" in paths[EXPORT]["get"]["responses"]["200"]["content"]
