from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('checkpoints', '0001_initial'),
    ]

    operations = [
        migrations.AlterModelOptions(
            name='checkpoint',
            options={'ordering': ['-created_at'], 'permissions': [('cleanup_checkpoints', "Can delete every user's checkpoints older than an age")]},
        ),
    ]
