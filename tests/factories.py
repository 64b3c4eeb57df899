from __future__ import annotations

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.utils import timezone

from operations import registry
from operations.ids import new_operation_id
from operations.models import Operation, OperationStatus, Worker, WorkerStatus
from operations.permissions import operators_group
from operations.summaries import figures_dict


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ["username"]
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password("secret-pass")


class StaffFactory(UserFactory):
    """Staff as an upgrade leaves them: in the Operators group (see all, cancel, resume, clean up)."""

    username = factory.Sequence(lambda n: f"staff{n}")
    is_staff = True

    @factory.post_generation
    def operator(user, create, extracted, **kwargs):
        if create:
            user.groups.add(operators_group())


class ViewOnlyStaffFactory(UserFactory):
    """Staff who may open the admin and look at operations and checkpoints, and nothing more."""

    username = factory.Sequence(lambda n: f"viewer{n}")
    is_staff = True

    @factory.post_generation
    def view_permissions(user, create, extracted, **kwargs):
        if create:
            user.user_permissions.add(*Permission.objects.filter(
                codename__in=["view_operation", "view_checkpoint", "view_worker", "view_operationevent"]
            ))


class WorkerUserFactory(UserFactory):
    """A user holding the worker permission: what a worker's API token belongs to."""

    username = factory.Sequence(lambda n: f"worker-account{n}")

    @factory.post_generation
    def worker_permission(user, create, extracted, **kwargs):
        if create:
            user.user_permissions.add(Permission.objects.get(codename="act_as_worker"))


class WorkerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Worker

    worker_id = factory.Sequence(lambda n: f"host{n}:resilient:{1000 + n}")
    host = factory.LazyAttribute(lambda w: w.worker_id.split(":")[0])
    pid = factory.LazyAttribute(lambda w: int(w.worker_id.split(":")[2]))
    status = WorkerStatus.IDLE
    last_seen_at = factory.LazyFunction(timezone.now)


class OperationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Operation

    operation_type = "training"
    operation_id = factory.LazyAttribute(lambda o: new_operation_id(o.operation_type))
    status = OperationStatus.PENDING
    params = factory.LazyFunction(lambda: {"symbol": "SYN", "timeframe": "1h"})
    result = None
    # Its figures beside its result, as the completion of a run writes them.
    summary = factory.LazyAttribute(lambda o: figures_dict(registry.result_summary(o.operation_type, o.result)))


class RunningOperationFactory(OperationFactory):
    class Meta:
        skip_postgeneration_save = True

    status = OperationStatus.RUNNING
    worker = factory.SubFactory(WorkerFactory, status=WorkerStatus.BUSY)
    attempt = 1
    started_at = factory.LazyFunction(timezone.now)
    last_heartbeat_at = factory.LazyFunction(timezone.now)

    @factory.post_generation
    def point_worker_at_it(operation, create, extracted, **kwargs):
        if create and operation.worker_id:
            Worker.objects.filter(pk=operation.worker_id).update(current_operation=operation)
