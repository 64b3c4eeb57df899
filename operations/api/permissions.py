from rest_framework.permissions import BasePermission


class IsWorkerOrStaff(BasePermission):
    """Worker endpoints: a staff user, or a user holding the worker permission (a worker's token)."""

    message = "This endpoint needs a worker or staff credential."

    def has_permission(self, request, view) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and (user.is_staff or user.has_perm("operations.act_as_worker")))
