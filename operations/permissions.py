"""Who may do what: Django permissions, in the API, the admin and the CLI alike (docs/security.md).

An owner sees and acts on their own operations (cancel, resume, delete a
checkpoint) without any permission. Everything beyond that is a permission a
superuser holds implicitly and grants to others, one by one or through the
"Operators" group; `is_staff` only opens the admin's door.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import Group, Permission
from django.core.exceptions import PermissionDenied

VIEW_ALL = "operations.view_all_operations"  # see every user's operations (and their checkpoints)
CANCEL = "operations.cancel_operation"  # cancel another user's operations (those one sees)
RESUME = "operations.resume_operation"  # resume another user's operations
ACT_AS_WORKER = "operations.act_as_worker"  # register, heartbeat and report as a worker
VIEW_WORKERS = "operations.view_worker"  # read the fleet (GET workers/)
DELETE_CHECKPOINT = "checkpoints.delete_checkpoint"  # delete another user's checkpoints
CLEANUP_CHECKPOINTS = "checkpoints.cleanup_checkpoints"  # run the age-based cleanup over everyone's

# What staff could do before permissions decided: the "Operators" group holds these, and every staff user of
# an earlier installation was put in it on upgrade.
OPERATORS_GROUP = "Operators"
OPERATOR_PERMISSIONS = (VIEW_ALL, CANCEL, RESUME, ACT_AS_WORKER, VIEW_WORKERS, DELETE_CHECKPOINT, CLEANUP_CHECKPOINTS,
                        "operations.view_operation", "checkpoints.view_checkpoint")



def sees_all(user: Any) -> bool:
    return user.has_perm(VIEW_ALL)


def may_act_on(user: Any, operation: Any, permission: str) -> bool:
    """Its owner may; anyone else needs the permission. `operation` is an Operation (or has its `owner_id`)."""
    return (operation.owner_id is not None and operation.owner_id == user.pk) or user.has_perm(permission)


def require(user: Any, operation: Any, permission: str, what: str) -> None:
    """PermissionDenied (the API's 403 PERMISSION_DENIED) unless `may_act_on`."""
    if not may_act_on(user, operation, permission):
        raise PermissionDenied(f"Only its owner, or a user with the {permission} permission, may {what} "
                               f"{operation.pk}.")


def operators_group() -> Group:
    """The "Operators" group, holding OPERATOR_PERMISSIONS: made by a migration, made again if it was deleted."""
    group, _ = Group.objects.get_or_create(name=OPERATORS_GROUP)
    for name in OPERATOR_PERMISSIONS:
        app_label, codename = name.split(".")
        group.permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return group
