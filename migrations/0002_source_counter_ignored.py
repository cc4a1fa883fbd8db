from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('nudgespot', '0001_initial')]

    initial = False

    operations = [
        ops.AlterModelOptions(
            name='SourceCounter',
            options={'table': 'nudgespot_source_counter', 'app': 'nudgespot', 'pk_attr': 'source', 'table_description': 'Per-source state with no row of its own: duplicate and ignored counts, a Retry-After hold.'},
        ),
        ops.AddField(
            model_name='SourceCounter',
            name='ignored',
            field=fields.BigIntField(default=0, db_default=0),
        ),
    ]
