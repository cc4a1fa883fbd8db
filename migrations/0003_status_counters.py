from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('nudgespot', '0002_source_counter_ignored')]

    initial = False

    operations = [
        ops.CreateModel(
            name='BacklogMinute',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('source', fields.CharField(max_length=100)),
                ('minute', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('pending', fields.BigIntField(default=0, db_default=0)),
            ],
            options={'table': 'nudgespot_backlog_minute', 'app': 'nudgespot', 'unique_together': (('source', 'minute'),), 'pk_attr': 'id', 'table_description': "Pending events per source, sampled once a minute (the day's chart)."},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='DeliveryMinute',
            fields=[
                ('id', fields.BigIntField(generated=True, primary_key=True, unique=True, db_index=True)),
                ('source', fields.CharField(max_length=100)),
                ('minute', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('delivered', fields.BigIntField(default=0, db_default=0)),
            ],
            options={'table': 'nudgespot_delivery_minute', 'app': 'nudgespot', 'unique_together': (('source', 'minute'),), 'pk_attr': 'id', 'table_description': "Events delivered per source and minute (status figures, the day's chart)."},
            bases=['Model'],
        ),
        ops.AlterModelOptions(
            name='SourceCounter',
            options={'table': 'nudgespot_source_counter', 'app': 'nudgespot', 'pk_attr': 'source', 'table_description': 'Per-source figures kept in the transactions that change them, and a Retry-After hold.'},
        ),
        ops.AddField(
            model_name='SourceCounter',
            name='delivered',
            field=fields.BigIntField(default=0, db_default=0),
        ),
        ops.AddField(
            model_name='SourceCounter',
            name='last_delivery_at',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name='SourceCounter',
            name='last_error',
            field=fields.TextField(null=True, unique=False),
        ),
        ops.AddField(
            model_name='SourceCounter',
            name='last_error_at',
            field=fields.DatetimeField(null=True, auto_now=False, auto_now_add=False),
        ),
        ops.AddField(
            model_name='SourceCounter',
            name='rejected',
            field=fields.BigIntField(default=0, db_default=0),
        ),
    ]

# Status at scale: pending and dead counts read a partial index that holds only those rows
# (the condition is models.schema.BACKLOG), retention finds old delivered rows through one
# that holds only delivered rows, and the counters start from what the table holds now.
BACKLOG_INDEX = (
    "CREATE INDEX nudgespot_event_backlog ON nudgespot_event "
    "(source, status, attempts, received_at, next_attempt_at) "
    "WHERE status IN ('pending', 'dead')"
)
DELIVERED_INDEX = (
    "CREATE INDEX nudgespot_event_delivered_at ON nudgespot_event (delivered_at) "
    "WHERE status = 'delivered'"
)
COUNT_DELIVERED = (
    "INSERT INTO nudgespot_source_counter (source, duplicates, delivered, last_delivery_at) "
    "SELECT source, 0, COUNT(*), MAX(delivered_at) FROM nudgespot_event "
    "WHERE status = 'delivered' GROUP BY source "
    "ON CONFLICT (source) DO UPDATE SET delivered = excluded.delivered, "
    "last_delivery_at = excluded.last_delivery_at"
)
COUNT_REJECTED = (
    "INSERT INTO nudgespot_source_counter (source, duplicates, rejected) "
    "SELECT source, 0, COUNT(*) FROM nudgespot_rejected WHERE id > 0 GROUP BY source "
    "ON CONFLICT (source) DO UPDATE SET rejected = excluded.rejected"
)
# The latest error per source: one pass with a window function (a correlated subquery per
# row would take hours on a large table). Only pending and dead rows keep an error (delivery
# clears it), so the backlog index serves the pass.
LAST_ERROR = (
    "INSERT INTO nudgespot_source_counter (source, duplicates, last_error, last_error_at) "
    "SELECT source, 0, last_error, updated_at FROM ("
    "SELECT source, last_error, updated_at, ROW_NUMBER() OVER ("
    "PARTITION BY source ORDER BY updated_at DESC, id DESC) AS position "
    "FROM nudgespot_event WHERE status IN ('pending', 'dead') AND last_error IS NOT NULL"
    ") latest WHERE position = 1 "
    "ON CONFLICT (source) DO UPDATE SET last_error = excluded.last_error, "
    "last_error_at = excluded.last_error_at"
)
Migration.operations += [
    ops.RunSQL(BACKLOG_INDEX, reverse_sql="DROP INDEX nudgespot_event_backlog"),
    ops.RunSQL(DELIVERED_INDEX, reverse_sql="DROP INDEX nudgespot_event_delivered_at"),
    ops.RunSQL([COUNT_DELIVERED, COUNT_REJECTED, LAST_ERROR], reverse_sql=[]),
]
