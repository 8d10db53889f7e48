from django.core.management.base import BaseCommand, CommandError

from domains.tenancy import TenancyError, create_tenant
from sendmsg.commands import emit


class Command(BaseCommand):
    help = "Manage tenants: `tenant create NAME --owner EMAIL`."

    def add_arguments(self, parser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="Create a tenant and its owner's account.")
        create.add_argument("name")
        create.add_argument("--owner", required=True, help="Owner's email (login).")
        create.add_argument("--json", action="store_true")

    def handle(self, *args, action: str, **options) -> None:
        try:
            new = create_tenant(name=options["name"], owner_email=options["owner"])
        except TenancyError as exc:
            raise CommandError(str(exc)) from None
        lines = [f"Tenant {new.tenant.name} created (id {new.tenant.pk})."]
        if new.password:
            lines.append(f"Owner login: {new.owner.username}  password: {new.password}")
            lines.append("The password is shown only this once.")
        else:
            lines.append(f"Owner: existing account {new.owner.username}.")
        emit(
            self,
            as_json=options["json"],
            data={"id": new.tenant.pk, "name": new.tenant.name},
            lines=lines,
        )
