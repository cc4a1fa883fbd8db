"""The store: one database and the three query objects over it, one per caller."""

from __future__ import annotations

from models.admin import AdminQueries
from models.database import Database
from models.ingest import IngestQueries
from models.outbox import OutboxQueries
from models.sql import Dialect


class Store:
    """A database (`db`) and its queries: `ingest` (the webhook's writer), `outbox` (the
    publisher) and `admin` (status, replay, retention, quarantine)."""

    def __init__(self, url: str, *, connection_name: str | None = None) -> None:
        self.db = Database.for_url(url, connection_name=connection_name)
        self.ingest = IngestQueries(self.db)
        self.outbox = OutboxQueries(self.db)
        self.admin = AdminQueries(self.db)

    @property
    def dialect(self) -> Dialect:
        return self.db.dialect

    async def open(self) -> None:
        """Open the database (connections open lazily)."""
        await self.db.open()

    async def close(self) -> None:
        """Close the database's connections."""
        await self.db.close()

    async def migrate(self, target: str | None = None) -> None:
        """Apply the migrations this database has not had yet."""
        await self.db.migrate(target)

    async def ping(self) -> None:
        """Raise DatabaseUnavailable unless the database answers."""
        await self.db.ping()

    async def __aenter__(self) -> Store:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
