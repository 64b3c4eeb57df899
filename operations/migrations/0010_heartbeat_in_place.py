from django.conf import settings
from django.db import migrations, models

# Free room left in each page of the two tables heartbeats write, so that the new version of a row fits beside the
# old one on its page: with no index holding a written column, PostgreSQL then updates in place (HOT) and writes no
# index. Operations are many and each is written a few times a minute; workers few and written every heartbeat.
FILLFACTORS = {"operations_operation": 90, "operations_worker": 50}


def leave_room(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return  # SQLite has no such setting
    for table, fillfactor in FILLFACTORS.items():
        schema_editor.execute(f"ALTER TABLE {schema_editor.quote_name(table)} SET (fillfactor = {fillfactor})")


def fill_again(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table in FILLFACTORS:
        schema_editor.execute(f"ALTER TABLE {schema_editor.quote_name(table)} RESET (fillfactor)")


class Migration(migrations.Migration):

    dependencies = [
        ("operations", "0008_unclaimed_index"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RemoveIndex(model_name="operation", name="op_status_heartbeat_idx"),
        migrations.RemoveIndex(model_name="worker", name="worker_status_seen_idx"),
        migrations.AddIndex(
            model_name="operation",
            index=models.Index(condition=models.Q(("status__in", ["RUNNING", "PENDING_RECONCILIATION"])),
                               fields=["status"], name="op_live_status_idx"),
        ),
        migrations.AddIndex(model_name="worker", index=models.Index(fields=["status"], name="worker_status_idx")),
        migrations.RunPython(leave_room, fill_again),
    ]
