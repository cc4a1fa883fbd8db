from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('nudgespot', '0003_status_counters')]

    initial = False

    operations = [
        ops.AddField(
            model_name='Event',
            name='message',
            field=fields.TextField(null=True, unique=False),
        ),
    ]
