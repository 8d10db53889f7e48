"""First-run setup, safe to repeat: secrets, TLS pair, migrations, the first operator, the
platform's own tenant and sending domain (for password resets and invitations)."""

from __future__ import annotations

import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

from sendmsg.platform_mail import PlatformMailError, ensure_platform
from sendmsg.tls import ensure_certificate


def ensure_operator() -> tuple[str, str] | None:
    """Create the first operator (superuser) if there is none; returns its login once."""
    User = get_user_model()
    if User.objects.filter(is_superuser=True).exists():
        return None
    password = secrets.token_urlsafe(12)
    username = "admin"
    if User.objects.filter(username=username).exists():
        username = f"admin-{secrets.token_hex(3)}"
    User.objects.create_superuser(username=username, email="", password=password)
    return username, password


class Command(BaseCommand):
    help = (
        "Generate secrets and the TLS pair, migrate, create the first operator account and "
        "the platform's own tenant and sending domain."
    )

    def handle(self, *args, **options) -> None:
        # Settings generated the secrets into the data folder on import already.
        cert, _ = ensure_certificate()
        call_command("migrate", interactive=False, verbosity=0)
        call_command("collectstatic", interactive=False, verbosity=0)
        self.stdout.write(f"Data folder: {settings.DATA_DIR}")
        self.stdout.write(f"TLS certificate: {cert}")
        login = ensure_operator()
        if login:
            self.stdout.write(
                f"Operator account created: user {login[0]}  password {login[1]}\n"
                "  (shown only this once; change it in the admin)"
            )
        self.ensure_platform()

    def ensure_platform(self) -> None:
        try:
            setup = ensure_platform()
        except PlatformMailError as exc:
            # Not fatal: everything but the platform's own mail works without it.
            self.stderr.write(f"Platform mail is not set up: {exc}")
            return
        name = setup.domain.name
        if setup.created:
            self.stdout.write(
                f"Platform sending domain {name} created in tenant {setup.tenant.name!r} and "
                "marked verified; publish its DNS records so that receivers accept its mail:\n"
                f"  manage.py domain records {name}"
            )
        elif setup.verified_now:
            self.stdout.write(f"Platform sending domain {name} marked verified again.")
        else:
            self.stdout.write(f"Platform mail: {settings.SENDMSG_PLATFORM_FROM} ({name})")
