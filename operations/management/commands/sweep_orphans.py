from django.core.management.base import BaseCommand

from operations.management.base import write_report
from operations.services.reconciliation import sweep_orphans


class Command(BaseCommand):
    help = "Run one pass of the orphan sweep and print what it changed."

    def handle(self, *args, **options) -> None:
        report = sweep_orphans()
        write_report(self, report.as_dict(), nothing="Sweep: nothing to change.", verbosity=options["verbosity"])

