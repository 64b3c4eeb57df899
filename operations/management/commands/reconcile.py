from django.core.management.base import BaseCommand

from operations.management.commands.sweep_orphans import write_report
from operations.services.reconciliation import reconcile_startup


class Command(BaseCommand):
    help = (
        "Run startup reconciliation: RUNNING worker operations await their worker's heartbeat "
        "(PENDING_RECONCILIATION); RUNNING backend-local operations are FAILED."
    )

    def handle(self, *args, **options) -> None:
        report = reconcile_startup()
        write_report(self, report.as_dict(), nothing="Reconcile: nothing was running.", verbosity=options["verbosity"])
