"""Helpers shared by the operator commands: JSON output and tenant lookup."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from domains.models import Tenant


def get_tenant(name: str) -> Tenant:
    tenant = Tenant.objects.filter(name__iexact=name).first()
    if tenant is None:
        raise CommandError(f"No tenant named {name!r}; create it with `manage.py tenant create`.")
    return tenant


def emit(command: BaseCommand, *, as_json: bool, data: dict, lines: list[str]) -> None:
    if as_json:
        command.stdout.write(json.dumps(data))
    else:
        for line in lines:
            command.stdout.write(line)
