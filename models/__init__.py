"""Storage: the database adapters, the query objects over them, and the tortoise models that
migrations are made from. The only package that writes SQL or imports tortoise."""

from models.database import Database, DatabaseInUse, DatabaseUnavailable
from models.ingest import IngestBatch, IngestResult, NewEvent, NewReject
from models.outbox import ClaimedEvent
from models.store import Store

__all__ = [
    "ClaimedEvent",
    "Database",
    "DatabaseInUse",
    "DatabaseUnavailable",
    "IngestBatch",
    "IngestResult",
    "NewEvent",
    "NewReject",
    "Store",
]
