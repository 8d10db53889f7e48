"""Operator commands: names and JSON shapes scripts rely on; bad input fails clearly."""

from __future__ import annotations

import pytest
from django.core.management.base import CommandError

from delivery.credentials import check_api_key, check_smtp_login
from domains.models import Domain
from tests.conftest import run_command, run_json

pytestmark = pytest.mark.django_db


def test_create_commands_print_one_json_object_each():
    tenant = run_json("tenant", "create", "Acme", "--owner", "owner@acme.test")
    assert set(tenant) == {"id", "name"} and tenant["name"] == "Acme"
    domain = run_json("domain", "add", "--tenant", "Acme", "Bücher.Test")
    assert set(domain) == {"id", "domain", "status"}
    assert domain == {"id": domain["id"], "domain": "xn--bcher-kva.test", "status": "pending"}
    key = run_json("apikey", "create", "--tenant", "Acme")
    assert set(key) == {"id", "prefix", "key"} and key["key"].startswith(f"sm_{key['prefix']}_")
    assert check_api_key(key["key"]).tenant.name == "Acme"
    cred = run_json("smtpcredential", "create", "--tenant", "Acme", "--domain", "bücher.test")
    assert set(cred) == {"id", "username", "password"}
    identity = check_smtp_login(cred["username"], cred["password"])
    assert identity.domain_ids == {domain["id"]}


def test_tenant_create_prints_the_owner_login_once():
    out = run_command("tenant", "create", "Acme", "--owner", "owner@acme.test")
    assert "password:" in out
    out = run_command("tenant", "create", "Acme Two", "--owner", "owner@acme.test")
    assert "password" not in out and "existing account" in out


def test_records_are_zone_lines_with_absolute_names_and_split_txt():
    import dns.zone

    run_json("tenant", "create", "Acme", "--owner", "owner@acme.test")
    run_json("domain", "add", "--tenant", "Acme", "acme.test")
    out = run_command("domain", "records", "acme.test")
    zone_text = "\n".join(line for line in out.splitlines() if not line.startswith(";"))
    zone = dns.zone.from_text(
        "@ 3600 IN SOA ns. host. 1 2 3 4 5\n@ 3600 IN NS ns.\n" + zone_text,
        origin="acme.test.",
        relativize=False,
    )
    key = Domain.objects.get().active_dkim_key()
    [txt] = zone.find_rdataset(f"{key.selector}._domainkey.acme.test.", "TXT")
    assert all(len(s) <= 255 for s in txt.strings) and len(txt.strings) > 1
    assert b"".join(txt.strings).decode() == key.record_value
    [cname] = zone.find_rdataset("rp.acme.test.", "CNAME")
    assert str(cname.target) == "rp.sendmsg.test."


@pytest.mark.parametrize(
    "args, message",
    [
        (("tenant", "create", "X", "--owner", "not-an-email"), "not an email"),
        (("domain", "add", "--tenant", "Nobody", "x.test"), "No tenant named"),
        (("domain", "add", "--tenant", "Acme", "no_dots"), "not a domain"),
        (("domain", "add", "--tenant", "Acme", "bad..name.test"), "not a valid domain"),
        (("domain", "records", "unknown.test"), "No domain unknown.test"),
        (("domain", "check", "unknown.test"), "No domain unknown.test"),
        (("apikey", "create", "--tenant", "Nobody"), "No tenant named"),
        (
            ("smtpcredential", "create", "--tenant", "Acme", "--domain", "globex.test"),
            "not a domain of tenant",
        ),
    ],
)
def test_bad_input_fails_with_a_clear_message_and_changes_nothing(args, message):
    run_json("tenant", "create", "Acme", "--owner", "owner@acme.test")
    before = Domain.objects.count()
    with pytest.raises(CommandError, match=message):
        run_command(*args)
    assert Domain.objects.count() == before


def test_duplicate_domain_is_refused():
    run_json("tenant", "create", "Acme", "--owner", "owner@acme.test")
    run_json("domain", "add", "--tenant", "Acme", "acme.test")
    with pytest.raises(CommandError, match="already registered"):
        run_command("domain", "add", "--tenant", "Acme", "ACME.test.")
