from django.core.management.base import BaseCommand

from delivery.credentials import create_api_key
from sendmsg.commands import emit, get_tenant


class Command(BaseCommand):
    help = "Manage API keys: `apikey create --tenant NAME` prints the key once."

    def add_arguments(self, parser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="Create an API key for a tenant.")
        create.add_argument("--tenant", required=True)
        create.add_argument("--name", default="")
        create.add_argument("--json", action="store_true")

    def handle(self, *args, action: str, **options) -> None:
        api_key, key = create_api_key(tenant=get_tenant(options["tenant"]), name=options["name"])
        emit(
            self,
            as_json=options["json"],
            data={"id": api_key.pk, "prefix": api_key.prefix, "key": key},
            lines=[
                f"API key: {key}",
                "It is shown only this once; send it as `Authorization: Bearer <key>`.",
            ],
        )
