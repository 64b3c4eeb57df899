import re

import django.core.validators
import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('operations', '0004_operation_permissions'),
    ]

    operations = [
        migrations.CreateModel(
            name='WorkerCredential',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('host', models.CharField(help_text='The host name of the worker ids it may act for (the <host> of <host>:<cluster>:<pid>).', max_length=200, validators=[django.core.validators.RegexValidator(re.compile('^[A-Za-z0-9._-]{1,200}\\Z'), 'Letters, digits, dots, dashes and underscores.')])),
                ('prefix', models.CharField(editable=False, max_length=16, unique=True)),
                ('digest', models.CharField(editable=False, max_length=64, unique=True)),
                ('description', models.CharField(blank=True, max_length=200)),
                ('created_at', models.DateTimeField(default=django.utils.timezone.now, editable=False)),
                ('created_by', models.CharField(blank=True, editable=False, max_length=255)),
                ('last_used_at', models.DateTimeField(blank=True, editable=False, null=True)),
                ('revoked_at', models.DateTimeField(blank=True, editable=False, null=True)),
            ],
            options={
                'ordering': ['host', '-created_at'],
            },
        ),
        migrations.AddField(
            model_name='operationevent',
            name='principal',
            field=models.CharField(blank=True, default='', max_length=255),
        ),
    ]
