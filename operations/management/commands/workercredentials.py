"""`manage.py workercredentials create|list|revoke`: one credential per worker machine, bound to its host."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from operations.management.base import ActionCommand
from operations.models import WorkerCredential
from operations.services.credentials import credential_create, credential_revoke


class Command(ActionCommand):
    help = ("Worker credentials: a worker machine that reaches the API (register, heartbeat, report) sends "
            "'Authorization: Worker <key>' and may act only for the worker ids of its host.")

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True, metavar="{create,list,revoke}")

        create = actions.add_parser("create", help="Make a credential for one host; its key is printed once.")
        create.add_argument("--host", required=True, help="The host name of the worker ids it may act for.")
        create.add_argument("--description", default="", help="A note: the machine, who asked for it.")
        create.add_argument("--json", action="store_true", help="Print the credential and its key as JSON.")

        listing = actions.add_parser("list", help="List credentials (never their keys).")
        listing.add_argument("--all", action="store_true", help="Revoked ones too.")
        listing.add_argument("--json", action="store_true", help="Print the credentials as JSON.")

        revoke = actions.add_parser("revoke", help="Revoke a credential: refused from its next request.")
        revoke.add_argument("prefix", help="The credential's prefix, as `list` shows it (wk_xxxxxxxx).")
        revoke.add_argument("--json", action="store_true", help="Print the revoked credential as JSON.")

    def handle_create(self, *, host: str, description: str, json: bool, **_: Any) -> None:
        try:
            credential, key = credential_create(host=host, description=description, actor="cli")
        except ValueError as exc:
            raise CommandError(f"--host: {exc}") from None
        if json:
            self.write_json({**credential_body(credential), "key": key})
            return
        self.stderr.write(f"Worker credential {credential.prefix} for host {credential.host}. Its key, shown this "
                          "once; the machine sends it as 'Authorization: Worker <key>':")
        self.stdout.write(key)

    def handle_list(self, *, all: bool, json: bool, **_: Any) -> None:
        credentials = WorkerCredential.objects.all()
        if not all:
            credentials = credentials.filter(revoked_at__isnull=True)
        if json:
            self.write_json({"count": len(credentials), "results": [credential_body(c) for c in credentials]})
            return
        if not credentials:
            self.stdout.write("No worker credentials.")
            return
        self.stdout.write(f"{'prefix':<12} {'host':<30} {'created':<20} {'last used':<20} {'revoked':<20} description")
        for credential in credentials:
            self.stdout.write(
                f"{credential.prefix:<12} {credential.host:<30} {when(credential.created_at):<20} "
                f"{when(credential.last_used_at):<20} {when(credential.revoked_at):<20} {credential.description}"
            )

    def handle_revoke(self, *, prefix: str, json: bool, **_: Any) -> None:
        credential = credential_revoke(prefix=prefix)
        if json:
            self.write_json(credential_body(credential))
            return
        self.stdout.write(f"Revoked {credential.prefix} (host {credential.host}) at {when(credential.revoked_at)}.")


def credential_body(credential: WorkerCredential) -> dict[str, Any]:
    """A credential as --json prints it; never its key (but once, by create)."""
    return {"prefix": credential.prefix, "host": credential.host, "description": credential.description,
            "created_at": credential.created_at, "created_by": credential.created_by,
            "last_used_at": credential.last_used_at, "revoked_at": credential.revoked_at}


def when(moment) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else "-"
