"""DRF permission classes over the Django permissions of operations.permissions."""

from __future__ import annotations

from rest_framework.permissions import BasePermission

from operations import permissions


class Holds(BasePermission):
    """The user holds `permission` (a superuser holds them all)."""

    permission = ""

    def has_permission(self, request, view) -> bool:
        return bool(request.user and request.user.is_authenticated and request.user.has_perm(self.permission))


def holds(permission: str, what: str) -> type[BasePermission]:
    """A permission class for one Django permission; `what` ends its 403 message ("... needs it to <what>")."""
    return type(f"Holds[{permission}]", (Holds,), {
        "permission": permission,
        "message": f"This endpoint needs the {permission} permission (to {what}).",
    })


ActsAsWorker = holds(permissions.ACT_AS_WORKER, "register, heartbeat and report as a worker")
SeesWorkers = holds(permissions.VIEW_WORKERS, "read the workers")
CleansUpCheckpoints = holds(permissions.CLEANUP_CHECKPOINTS, "delete everyone's old checkpoints")
