"""Small SQL builders for the statements the ORM cannot express (multi-row upserts)."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any


class Dialect(enum.Enum):
    SQLITE = "sqlite"
    POSTGRES = "postgres"

    @classmethod
    def from_engine(cls, engine: str) -> Dialect:
        """Return the dialect of a tortoise engine path such as 'tortoise.backends.sqlite'."""
        if engine.endswith("sqlite"):
            return cls.SQLITE
        if engine.endswith(("asyncpg", "psycopg")):
            return cls.POSTGRES
        raise ValueError(f"unsupported database engine {engine!r}: use sqlite:// or postgres://")

    def placeholder(self, position: int) -> str:
        """Return the parameter marker for the 1-based position."""
        return f"?{position}" if self is Dialect.SQLITE else f"${position}"


def insert_rows(
    dialect: Dialect,
    table: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    suffix: str = "",
) -> tuple[str, list[Any]]:
    """Return one multi-row INSERT statement and its flat parameter list."""
    params: list[Any] = []
    groups = []
    for row in rows:
        markers = []
        for value in row:
            params.append(value)
            markers.append(dialect.placeholder(len(params)))
        groups.append("(" + ", ".join(markers) + ")")
    sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES {', '.join(groups)}"
    return (f"{sql} {suffix}" if suffix else sql), params


def in_list(dialect: Dialect, values: Sequence[Any], first_position: int = 1) -> str:
    """Return the markers of an IN (...) list whose parameters start at first_position."""
    return ", ".join(dialect.placeholder(first_position + i) for i in range(len(values)))
