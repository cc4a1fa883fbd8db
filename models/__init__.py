"""Storage: tortoise models and the store. The only package that writes SQL or imports tortoise."""

from models.store import (
    DatabaseUnavailable,
    IngestBatch,
    IngestResult,
    NewEvent,
    NewReject,
    Store,
)

__all__ = [
    "DatabaseUnavailable",
    "IngestBatch",
    "IngestResult",
    "NewEvent",
    "NewReject",
    "Store",
]
