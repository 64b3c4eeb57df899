import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def owners_from_sessions(apps, schema_editor):
    """Each assessment belongs to its session's owner's search."""
    Assessment = apps.get_model("agents", "Assessment")
    for assessment in Assessment.objects.select_related("session").filter(session__owner__isnull=False):
        Assessment.objects.filter(pk=assessment.pk).update(owner_id=assessment.session.owner_id)


class Migration(migrations.Migration):

    dependencies = [
        ('agents', '0001_initial'),
        ('operations', '0005_worker_credentials'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name='assessment',
            name='owner',
            field=models.ForeignKey(blank=True, help_text="The session's owner: whose search it belongs to.", null=True, on_delete=django.db.models.deletion.CASCADE, related_name='+', to=settings.AUTH_USER_MODEL),
        ),
        migrations.RunPython(owners_from_sessions, migrations.RunPython.noop),
        migrations.AlterField(
            model_name='assessment',
            name='configuration_key',
            field=models.CharField(max_length=32),
        ),
        migrations.AddConstraint(
            model_name='assessment',
            constraint=models.UniqueConstraint(fields=('owner', 'configuration_key'), name='assessment_owner_configuration'),
        ),
        migrations.AddConstraint(
            model_name='assessment',
            constraint=models.UniqueConstraint(condition=models.Q(('owner__isnull', True)), fields=('configuration_key',), name='assessment_ownerless_configuration'),
        ),
    ]
