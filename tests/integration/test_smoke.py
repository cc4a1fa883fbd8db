from models import IngestBatch, NewEvent
from models.store import utcnow


async def test_store_ingests_on_each_database(store):
    event = NewEvent("default", "k1", "email_sent", utcnow(), "{}", "{}")
    [result] = await store.ingest([IngestBatch(events=[event, event])])
    assert result.stored == [True, False]
