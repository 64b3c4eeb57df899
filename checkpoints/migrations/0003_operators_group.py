"""Upgrade without losing access: staff could list, cancel and resume every user's operations, run checkpoint
cleanup and act as a worker; permissions decide now. This creates the "Operators" group, holding those
permissions, and puts every staff user who is not a superuser in it (superusers hold every permission)."""

from django.apps import apps as global_apps
from django.conf import settings
from django.contrib.auth.management import create_permissions
from django.db import migrations

# As of this migration (operations.permissions.OPERATOR_PERMISSIONS then); a migration keeps its own copy.
OPERATOR_PERMISSIONS = (
    "operations.view_all_operations",
    "operations.cancel_operation",
    "operations.resume_operation",
    "operations.act_as_worker",
    "operations.view_worker",
    "operations.view_operation",
    "checkpoints.delete_checkpoint",
    "checkpoints.cleanup_checkpoints",
    "checkpoints.view_checkpoint",
)


def create_operators(apps, schema_editor):
    database = schema_editor.connection.alias
    for label in ("operations", "checkpoints"):  # permissions are otherwise created after the last migration
        create_permissions(global_apps.get_app_config(label), verbosity=0, apps=apps, using=database)
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    User = apps.get_model(*settings.AUTH_USER_MODEL.split("."))
    operators, _ = Group.objects.using(database).get_or_create(name="Operators")
    for name in OPERATOR_PERMISSIONS:
        app_label, codename = name.split(".")
        operators.permissions.add(
            Permission.objects.using(database).get(content_type__app_label=app_label, codename=codename)
        )
    for user in User.objects.using(database).filter(is_staff=True, is_superuser=False):
        user.groups.add(operators)


class Migration(migrations.Migration):
    dependencies = [
        ("checkpoints", "0002_checkpoint_cleanup_permission"),
        ("operations", "0004_operation_permissions"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [migrations.RunPython(create_operators, migrations.RunPython.noop)]
