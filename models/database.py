"""One adapter per database backend: the only code that touches tortoise-orm or a driver.

An adapter owns its connections (a tortoise context of its own, so several databases can live
in one process), runs statements and transactions, and knows its SQL dialect and which driver
failures mean "the database is unavailable" as opposed to a bug. The query objects in
`ingest.py`, `outbox.py` and `admin.py` speak SQL through it and never see tortoise.
"""

from __future__ import annotations

import abc
import contextlib
import functools
import importlib
import os
import pkgutil
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any, ClassVar, NoReturn

from tortoise.backends.base.config_generator import expand_db_url
from tortoise.context import TortoiseContext
from tortoise.migrations.api import migrate as run_migrations

from models.sql import Dialect

APP_LABEL = "nudgespot"
MIGRATIONS_MODULE = "migrations"
MODELS_MODULE = "models.tables"

Row = dict[str, Any]
Statement = tuple[str, Sequence[Any]]


class DatabaseUnavailable(Exception):
    """The database could not be reached or refused the work for now; retry later."""


class DatabaseInUse(Exception):
    """Another process serves this database, and it can have only one (SQLite)."""


def describe(exc: BaseException) -> str:
    """Return a short description of a storage failure that carries no connection secrets."""
    text = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Transaction(abc.ABC):
    """Statements run in one database transaction (see Database.transaction)."""

    @abc.abstractmethod
    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run a statement and return its rows (and any statements queued before it)."""

    @abc.abstractmethod
    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Queue a statement whose rows are not needed; it runs with the next fetch or at
        commit, so its failure surfaces there."""


class Database(abc.ABC):
    """A database this service stores its state in. Each backend is one module in
    models/backends/ with one subclass; for_url finds it by the URL's tortoise engine."""

    dialect: ClassVar[Dialect]
    # tortoise engines (as expand_db_url names them) this adapter serves
    engines: ClassVar[tuple[str, ...]]
    # group-commit writers worth running at once (SQLite has one writer)
    concurrent_writers: ClassVar[int] = 1
    # whether `serve` applies migrations itself (one process owns an embedded database)
    migrates_on_serve: ClassVar[bool] = False
    # whether the publisher's leases live in the serving process rather than in the rows
    # (only where `exclusive` keeps a second process from serving the same database)
    leases_in_memory: ClassVar[bool] = False

    def __init__(self, url: str, *, connection_name: str | None = None) -> None:
        db = expand_db_url(url)
        self.connection_defaults(db["credentials"])
        self.config = tortoise_config(db, self.dialect, connection_name=connection_name)
        self.connection_name = next(iter(self.config["connections"]))
        self._ctx: TortoiseContext | None = None

    @staticmethod
    def for_url(url: str, *, connection_name: str | None = None) -> Database:
        """Return the adapter for a database URL (sqlite://PATH, postgres://...)."""
        engine = expand_db_url(url)["engine"]
        for adapter in adapters():
            if engine in adapter.engines:
                return adapter(url, connection_name=connection_name)
        raise ValueError(f"unsupported database engine {engine!r}: use sqlite:// or postgres://")

    @classmethod
    @abc.abstractmethod
    def connection_defaults(cls, credentials: dict[str, Any]) -> None:
        """Fill in this service's defaults for connection settings the URL leaves out."""

    # --- lifecycle ------------------------------------------------------------------------

    async def open(self) -> None:
        """Initialise this database's own tortoise context (connections open lazily)."""
        _prepare_sqlite_path(self.config)
        ctx = TortoiseContext()
        with ctx:  # init resolves the models' connections through the current context
            await ctx.init(config=self.config)
        self._ctx = ctx

    async def close(self) -> None:
        """Close this database's connections."""
        if self._ctx is not None:
            ctx, self._ctx = self._ctx, None
            await ctx.close_connections()

    async def migrate(self, target: str | None = None) -> None:
        """Apply every migration this database has not had yet (up to `target`)."""
        _prepare_sqlite_path(self.config)
        # The migration API initialises the current context: give it one of its own, so
        # that it never closes or re-initialises this adapter's connections.
        with TortoiseContext() as ctx:
            try:
                await run_migrations(config=self.config, target=target)
            finally:
                await ctx.close_connections()

    def exclusive(self) -> Callable[[], None]:
        """Claim this database for one serving process; return what gives it up.

        Raises DatabaseInUse when another process holds it. Databases that several
        replicas serve at once (their leases are in the rows) claim nothing.
        """
        return lambda: None

    @contextlib.contextmanager
    def orm(self) -> Iterator[None]:
        """Make tortoise model queries in this block use this database (tests, tools)."""
        with self._context():
            yield

    # --- statements -----------------------------------------------------------------------

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run one statement on its own (autocommit) and return its rows."""
        try:
            return await self._client().execute_query_dict(sql, list(params))
        except Exception as exc:
            self.reraise(exc)

    async def read(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run a read-only statement where it waits for no write (the publisher's claims);
        it sees every transaction committed before it starts."""
        return await self.fetch(sql, params)

    async def ping(self) -> None:
        """Raise DatabaseUnavailable unless the database answers a trivial query."""
        try:
            await self._client().execute_query_dict("SELECT 1 AS ok")
        except Exception as exc:  # noqa: BLE001 - any failure here means "not ready"
            raise DatabaseUnavailable(describe(exc)) from exc

    @abc.abstractmethod
    def transaction(self) -> contextlib.AbstractAsyncContextManager[Transaction]:
        """Return `async with db.transaction() as tx`: committed when the block ends,
        rolled back when it raises."""

    # --- dialect --------------------------------------------------------------------------

    def placeholder(self, position: int) -> str:
        """Return the parameter marker for a 1-based position."""
        return self.dialect.placeholder(position)

    @abc.abstractmethod
    def time(self, value: datetime) -> Any:
        """Return a datetime as this driver takes it as a parameter."""

    @property
    @abc.abstractmethod
    def skip_locked(self) -> str:
        """Return the clause a claim's inner SELECT ends with to skip rows others lock."""

    # --- failures -------------------------------------------------------------------------

    def reraise(self, exc: Exception) -> NoReturn:
        """Raise DatabaseUnavailable (from `exc`) for an outage, else `exc` as it is."""
        translated = self.translate(exc)
        if translated is exc:
            raise exc
        raise translated from exc

    def translate(self, exc: BaseException) -> BaseException:
        """Return DatabaseUnavailable for a connection-level failure, else `exc` itself."""
        if isinstance(exc, DatabaseUnavailable):
            return exc
        for cause in _chain(exc):
            if self.is_unavailable(cause):
                return DatabaseUnavailable(describe(cause))
        return exc

    @abc.abstractmethod
    def is_unavailable(self, exc: BaseException) -> bool:
        """Whether a driver error means the database is out of reach or out of room
        (retry later), not that our statement is wrong."""

    # --- the seam -------------------------------------------------------------------------

    def _client(self) -> Any:
        if self._ctx is None:
            raise DatabaseUnavailable("the database is not open")
        return self._ctx.db(self.connection_name)

    @contextlib.contextmanager
    def _context(self) -> Iterator[None]:
        if self._ctx is None:
            raise DatabaseUnavailable("the database is not open")
        with self._ctx:
            yield


# --- configuration --------------------------------------------------------------------------


@functools.cache
def adapters() -> tuple[type[Database], ...]:
    """Return every backend adapter (one module each in models/backends/)."""
    import models.backends

    for module in pkgutil.iter_modules(models.backends.__path__):
        importlib.import_module(f"models.backends.{module.name}")
    return tuple(sorted(_subclasses(Database), key=lambda cls: cls.__name__))


def _subclasses(cls: type[Database]) -> list[type[Database]]:
    found = []
    for sub in cls.__subclasses__():
        if not getattr(sub, "__abstractmethods__", None):
            found.append(sub)
        found.extend(_subclasses(sub))
    return found


def tortoise_config(
    db: dict[str, Any], dialect: Dialect, *, connection_name: str | None = None
) -> dict[str, Any]:
    """Return a tortoise config for an expanded database URL."""
    name = connection_name or f"nudgespot_{dialect.name}"
    return {
        "connections": {name: db},
        "apps": {
            APP_LABEL: {
                "models": [MODELS_MODULE],
                "default_connection": name,
                "migrations": MIGRATIONS_MODULE,
            }
        },
        "use_tz": True,
        "timezone": "UTC",
    }


def _prepare_sqlite_path(config: dict[str, Any]) -> None:
    for conn in config["connections"].values():
        path = conn["credentials"].get("file_path", "")
        if conn["engine"].endswith("sqlite") and path and path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)


def config_for_url(url: str, *, connection_name: str | None = None) -> dict[str, Any]:
    """Return the tortoise config the adapter of `url` uses (migration tooling, tests)."""
    return Database.for_url(url, connection_name=connection_name).config


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """Yield an exception and what caused it (tortoise wraps driver errors)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        for arg in current.args:
            if isinstance(arg, BaseException) and id(arg) not in seen:
                yield arg
        current = current.__cause__ or current.__context__
