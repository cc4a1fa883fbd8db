from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    initial = True

    operations = [
        ops.CreateModel(
            name='Event',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('source', fields.CharField(max_length=100)),
                ('dedup_key', fields.CharField(max_length=255)),
                ('event_type', fields.CharField(max_length=32)),
                ('event_time', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('fields_json', fields.TextField(unique=False)),
                ('payload', fields.TextField(unique=False)),
                ('status', fields.CharField(default='pending', max_length=16)),
                ('attempts', fields.IntField(default=0)),
                ('next_attempt_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('last_error', fields.TextField(null=True, unique=False)),
                ('lease_owner', fields.CharField(null=True, max_length=64)),
                ('lease_expires_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('received_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('updated_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('delivered_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'nudgespot_event', 'app': 'nudgespot', 'unique_together': (('source', 'dedup_key'),), 'indexes': [Index(fields=['source', 'status', 'next_attempt_at'])], 'pk_attr': 'id', 'table_description': 'One accepted Nudgespot event, from receipt until Segment has it (or it is dead).'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='IdentifiedUser',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('source', fields.CharField(max_length=100)),
                ('user_key', fields.CharField(max_length=255)),
                ('identified_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'nudgespot_identified_user', 'app': 'nudgespot', 'unique_together': (('source', 'user_key'),), 'pk_attr': 'id', 'table_description': 'A user who has had an identify call sent for a source, so it is not sent again.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='RejectedEvent',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('source', fields.CharField(max_length=100)),
                ('body_index', fields.IntField(null=True)),
                ('payload', fields.TextField(unique=False)),
                ('reason', fields.TextField(unique=False)),
                ('received_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'nudgespot_rejected', 'app': 'nudgespot', 'indexes': [Index(fields=['source', 'received_at'])], 'pk_attr': 'id', 'table_description': 'A webhook event (or whole body) that could not be accepted, kept with its reason.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='SourceCounter',
            fields=[
                ('source', fields.CharField(primary_key=True, unique=True, db_index=True, max_length=100)),
                ('duplicates', fields.BigIntField(default=0)),
                ('held_until', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'nudgespot_source_counter', 'app': 'nudgespot', 'pk_attr': 'source', 'table_description': 'Per-source state with no row of its own: the duplicate count, a Retry-After hold.'},
            bases=['Model'],
        ),
    ]
