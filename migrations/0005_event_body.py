from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields

# Each event's fields, payload and message move to a table of their own, written once: claims
# and outcomes then rewrite only the narrow nudgespot_event row.
COPY_BODIES = (
    "INSERT INTO nudgespot_event_body (id, fields_json, payload, message) "
    "SELECT id, fields_json, payload, message FROM nudgespot_event"
)



class DropColumn(ops.RemoveField):
    """RemoveField as ALTER TABLE ... DROP COLUMN (SQLite 3.35+, PostgreSQL): tortoise's SQLite
    way, a rebuilt table, would lose the unique key and the partial indexes of 0003."""

    async def database_forward(self, app_label, old_state, new_state, state_editor=None):
        drop = f'ALTER TABLE nudgespot_event DROP COLUMN "{self.name}"'
        await ops.RunSQL(drop).database_forward(app_label, old_state, new_state, state_editor)


class Migration(migrations.Migration):
    dependencies = [('nudgespot', '0004_event_message')]

    initial = False

    operations = [
        ops.CreateModel(
            name='EventBody',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('fields_json', fields.TextField(unique=False)),
                ('payload', fields.TextField(unique=False)),
                ('message', fields.TextField(null=True, unique=False)),
            ],
            options={'table': 'nudgespot_event_body', 'app': 'nudgespot', 'pk_attr': 'id', 'table_description': 'What an event carries (fields, payload, message), written once at ingest.'},
            bases=['Model'],
        ),
        ops.RunSQL(COPY_BODIES, reverse_sql=[]),
        DropColumn(
            model_name='Event',
            name='fields_json',
        ),
        DropColumn(
            model_name='Event',
            name='payload',
        ),
        DropColumn(
            model_name='Event',
            name='message',
        ),
    ]
