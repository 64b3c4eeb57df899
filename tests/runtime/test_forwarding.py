"""Tasks queued under the task's old path (`operations.runtime.tasks.run_operation`, before the runtime had an
app of its own) still run: through its forwarding module, in-process and on a real cluster."""

from __future__ import annotations

import pytest
from django_q.models import Task
from django_q.tasks import async_task

from operations.models import Operation
from operations.models import OperationStatus as S
from operations.runtime.tasks import run_operation as forwarded_run_operation
from operations.services.lifecycle import operation_create
from runtime.tasks import RUN_OPERATION_TASK
from tests.conftest import replaced_executor
from tests.runtime.counting import straight_total
from tests.support.processes import wait_for
from tests.training.cluster import REQUEST, wait_until_completed
from tests.training.conftest import folders  # noqa: F401  (the fixture: market data and folders of the test's own)
from training.params import TrainingParamsSerializer

OLD_PATH = "operations.runtime.tasks.run_operation"


def test_the_old_path_is_not_the_one_queued_now():
    assert RUN_OPERATION_TASK == "runtime.tasks.run_operation" != OLD_PATH


@pytest.mark.django_db(transaction=True)
def test_the_forwarding_module_runs_the_task_registered_for_the_type(settings, checkpoint_dir):
    settings.HEARTBEAT_INTERVAL_SECONDS = 0.05
    with replaced_executor("training", runner="tests.runtime.counting.CountingRunner"):
        operation_id = operation_create(operation_type="training", params={"steps": 7}, actor="test",
                                        enqueue=False).pk
        assert forwarded_run_operation(operation_id) == "completed"
        assert forwarded_run_operation(operation_id) == "not claimed"  # a second delivery, as with the new path
    operation = Operation.objects.get(pk=operation_id)
    assert (operation.status, operation.result) == (S.COMPLETED, {"steps": 7, "total": straight_total(7)})


@pytest.mark.process
@pytest.mark.django_db(transaction=True)
def test_a_task_queued_before_the_upgrade_runs_on_a_new_cluster(children, folders):  # noqa: F811
    """The task is in the broker, under the old path, before the cluster starts: as after an upgrade."""
    request = TrainingParamsSerializer(data=REQUEST)
    request.is_valid(raise_exception=True)
    operation_id = operation_create(operation_type="training", params=request.to_params(), actor="test",
                                    enqueue=False).pk
    async_task(OLD_PATH, operation_id, task_name=operation_id, group="training")

    children.cluster(workers=1)
    operation = wait_until_completed(operation_id)

    assert operation.result["epochs_completed"] == REQUEST["epochs"]
    task = wait_for(lambda: Task.objects.filter(name=operation_id).first(), timeout=30, what="the task's result")
    assert (task.func, task.success, task.result) == (OLD_PATH, True, "completed")
