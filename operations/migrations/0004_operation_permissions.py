from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('operations', '0003_control_loop_lease'),
    ]

    operations = [
        migrations.AlterModelOptions(
            name='operation',
            options={'ordering': ['-created_at'], 'permissions': [('view_all_operations', "Can see every user's operations"), ('cancel_operation', "Can cancel another user's operations"), ('resume_operation', "Can resume another user's operations")]},
        ),
    ]
