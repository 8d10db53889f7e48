from django.core.management.base import BaseCommand, CommandError

from delivery.credentials import CredentialError, create_smtp_credential
from domains.models import Domain
from domains.names import InvalidDomain, normalize_domain
from sendmsg.commands import emit, get_tenant


class Command(BaseCommand):
    help = "Manage SMTP logins: `smtpcredential create --tenant NAME [--domain D]`."

    def add_arguments(self, parser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="Create an SMTP login; prints the password once.")
        create.add_argument("--tenant", required=True)
        create.add_argument(
            "--domain",
            action="append",
            default=[],
            help="Limit the login to this domain (repeatable).",
        )
        create.add_argument("--json", action="store_true")

    def handle(self, *args, action: str, **options) -> None:
        tenant = get_tenant(options["tenant"])
        domains = []
        for name in options["domain"]:
            try:
                domain = Domain.objects.filter(name=normalize_domain(name), tenant=tenant).first()
            except InvalidDomain as exc:
                raise CommandError(str(exc)) from None
            if domain is None:
                raise CommandError(f"{name} is not a domain of tenant {tenant.name}.")
            domains.append(domain)
        try:
            credential, password = create_smtp_credential(tenant=tenant, domains=domains)
        except CredentialError as exc:
            raise CommandError(str(exc)) from None
        emit(
            self,
            as_json=options["json"],
            data={"id": credential.pk, "username": credential.username, "password": password},
            lines=[
                f"SMTP username: {credential.username}",
                f"SMTP password: {password}",
                "The password is shown only this once.",
            ],
        )
