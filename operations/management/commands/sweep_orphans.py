from django.core.management.base import BaseCommand

from operations.management.base import write_report
from operations.services.reconciliation import sweep_orphans


class Command(BaseCommand):
    help = "Run one pass of the orphan sweep and print what it changed."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--json", action="store_true", help="Print what it changed as JSON, by kind of change.")

    def handle(self, *args, json: bool = False, **options) -> None:
        report = sweep_orphans()
        write_report(self, report.as_dict(), nothing="Sweep: nothing to change.", verbosity=options["verbosity"],
                     json=json)
