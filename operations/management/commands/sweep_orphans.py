from django.core.management.base import BaseCommand

from operations.services.reconciliation import sweep_orphans


class Command(BaseCommand):
    help = "Run one pass of the orphan sweep and print what it changed."

    def handle(self, *args, **options) -> None:
        report = sweep_orphans()
        write_report(self, report.as_dict(), nothing="Sweep: nothing to change.", verbosity=options["verbosity"])


def write_report(command: BaseCommand, changes: dict[str, list[str]], *, nothing: str, verbosity: int = 1) -> None:
    if verbosity == 0:
        return
    if not any(changes.values()):
        command.stdout.write(nothing)
        return
    for kind, items in changes.items():
        for item in items:
            command.stdout.write(f"{kind.replace('_', ' ')}: {item}")
    summary = ", ".join(f"{len(items)} {kind.replace('_', ' ')}" for kind, items in changes.items() if items)
    command.stdout.write(command.style.SUCCESS(summary))
