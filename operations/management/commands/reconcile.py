from django.core.management.base import BaseCommand

from operations.management.base import one_shot_control_loop, write_report
from operations.services.reconciliation import reconcile_startup


class Command(BaseCommand):
    help = (
        "Run startup reconciliation: RUNNING worker operations await their worker's heartbeat "
        "(PENDING_RECONCILIATION); RUNNING backend-local operations are FAILED. Refused while a "
        "supervise holds the control loop (it would fail that one's research sessions), unless --force."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--json", action="store_true", help="Print what it changed as JSON, by kind of change.")
        parser.add_argument(
            "--force", action="store_true",
            help="Reconcile even though a supervise holds the control loop, taking it from that one (a live one "
                 "stops). For a supervise you know is gone, whose claim has not lapsed yet.",
        )

    def handle(self, *args, force: bool = False, json: bool = False, **options) -> None:
        with one_shot_control_loop(self, force=force):
            report = reconcile_startup()
        write_report(self, report.as_dict(), nothing="Reconcile: nothing was running.", verbosity=options["verbosity"],
                     json=json)
