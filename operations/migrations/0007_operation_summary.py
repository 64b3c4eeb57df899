from django.db import migrations, models

from operations import registry
from operations.summaries import figures_dict

BATCH = 200  # results read at a time: a backtest's may be megabytes


def summarise_completed(apps, schema_editor):
    """The figures of every result written before operations kept them beside it (the domains' summaries,
    registered when the apps are ready, read plain JSON)."""
    Operation = apps.get_model("operations", "Operation")
    completed = Operation.objects.filter(result__isnull=False).order_by("pk").values_list("pk", flat=True)
    ids = list(completed)
    for start in range(0, len(ids), BATCH):
        for operation in Operation.objects.filter(pk__in=ids[start:start + BATCH]).only(
                "operation_id", "operation_type", "result"):
            summary = figures_dict(registry.result_summary(operation.operation_type, operation.result))
            if summary:
                Operation.objects.filter(pk=operation.pk).update(summary=summary)


class Migration(migrations.Migration):

    dependencies = [
        ("operations", "0006_restart_policy_and_fleet"),
    ]

    operations = [
        migrations.AddField(
            model_name="operation",
            name="summary",
            field=models.JSONField(
                blank=True, default=dict, editable=False,
                help_text="The result's headline figures by name (operations/summaries.py), written with it: what a "
                          "list shows, without reading a result that may hold megabytes of trades.",
            ),
        ),
        migrations.RunPython(summarise_completed, migrations.RunPython.noop),
    ]
