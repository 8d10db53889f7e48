from django.core.management.base import BaseCommand, CommandError

from domains.checks.run import check_domain
from domains.models import Domain
from domains.names import InvalidDomain, normalize_domain
from domains.records import records_for
from domains.tenancy import TenancyError, add_domain
from sendmsg.commands import emit, get_tenant


def get_domain(name: str) -> Domain:
    try:
        ascii_name = normalize_domain(name)
    except InvalidDomain as exc:
        raise CommandError(str(exc)) from None
    domain = Domain.objects.filter(name=ascii_name).first()
    if domain is None:
        raise CommandError(f"No domain {ascii_name}; add it with `manage.py domain add`.")
    return domain


class Command(BaseCommand):
    help = "Sending domains: add, records (zone-file lines to publish), check (DNS)."

    def add_arguments(self, parser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        add = sub.add_parser("add", help="Add a sending domain to a tenant (generates DKIM).")
        add.add_argument("domain")
        add.add_argument("--tenant", required=True)
        add.add_argument("--json", action="store_true")
        records = sub.add_parser("records", help="Print the DNS records to publish.")
        records.add_argument("domain")
        check = sub.add_parser(
            "check", help="Check the published records; last line says verified or pending."
        )
        check.add_argument("domain")

    def handle(self, *args, action: str, **options) -> None:
        getattr(self, f"do_{action}")(options)

    def do_add(self, options: dict) -> None:
        try:
            domain = add_domain(tenant=get_tenant(options["tenant"]), name=options["domain"])
        except TenancyError as exc:
            raise CommandError(str(exc)) from None
        emit(
            self,
            as_json=options["json"],
            data={"id": domain.pk, "domain": domain.name, "status": domain.status},
            lines=[
                f"Domain {domain.display_name} added ({domain.status}).",
                f"Publish its records: manage.py domain records {domain.name}",
            ],
        )

    def do_records(self, options: dict) -> None:
        domain = get_domain(options["domain"])
        for record in records_for(domain):
            required = "required" if record.required else "optional"
            self.stdout.write(f"; {required}: {record.purpose}")
            self.stdout.write(record.zone_line())

    def do_check(self, options: dict) -> None:
        domain = get_domain(options["domain"])
        report = check_domain(domain)
        for result in report.results:
            self.stdout.write(f"{result.name}: {result.status} - {result.message}")
        partial = " (partial: some checks got no DNS answer)" if report.partial else ""
        self.stdout.write(f"score: {report.score}{partial}")
        for event in report.events:
            self.stdout.write(f"event: {event.type} - {event.message}")
        domain.refresh_from_db()
        self.stdout.write(domain.status)
