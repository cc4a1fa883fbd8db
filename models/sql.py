"""Small SQL builders for the statements the ORM cannot express (multi-row upserts)."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Dialect:
    """What the SQL of one backend spells its own way (each adapter declares its own)."""

    name: str
    marker: str  # numbered parameters: "?" gives ?1, ?2 ...; "$" gives $1, $2 ...

    def placeholder(self, position: int) -> str:
        """Return the parameter marker for the 1-based position."""
        return f"{self.marker}{position}"


def insert_rows(
    dialect: Dialect,
    table: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    suffix: str = "",
) -> tuple[str, list[Any]]:
    """Return one multi-row INSERT statement and its flat parameter list."""
    sql = _insert_sql(dialect, table, tuple(columns), len(rows), suffix)
    return sql, list(itertools.chain.from_iterable(rows))


@functools.lru_cache(maxsize=256)
def _insert_sql(
    dialect: Dialect, table: str, columns: tuple[str, ...], nrows: int, suffix: str
) -> str:
    # Built once per shape: on the ingest path the statement text was a measurable cost.
    width = len(columns)
    groups = (
        "(" + ", ".join(dialect.placeholder(r * width + c + 1) for c in range(width)) + ")"
        for r in range(nrows)
    )
    sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES {', '.join(groups)}"
    return f"{sql} {suffix}" if suffix else sql


def in_list(dialect: Dialect, values: Sequence[Any], first_position: int = 1) -> str:
    """Return the markers of an IN (...) list whose parameters start at first_position."""
    return _markers(dialect, first_position, len(values))


@functools.lru_cache(maxsize=256)
def _markers(dialect: Dialect, first_position: int, count: int) -> str:
    return ", ".join(dialect.placeholder(first_position + i) for i in range(count))
