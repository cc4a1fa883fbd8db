"""The per-source counter row: one upsert shape for every change to it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from models.database import Statement
from models.schema import COUNTERS
from models.sql import Dialect, insert_rows

# Columns without a database default (0.1.0's schema): an insert must give them.
REQUIRED = {"duplicates": 0}


def counter_upsert(
    dialect: Dialect,
    source: str,
    *,
    add: Mapping[str, int] | None = None,
    assign: Mapping[str, Any] | None = None,
) -> Statement:
    """Return the statement that adds `add` to, and sets `assign` on, a source's counters
    (creating its row when it has none)."""
    add, assign = dict(add or {}), dict(assign or {})
    values = {**REQUIRED, **add, **assign}
    updates = [f"{c} = {COUNTERS}.{c} + excluded.{c}" for c in add]
    updates += [f"{c} = excluded.{c}" for c in assign]
    return insert_rows(
        dialect, COUNTERS, ("source", *values), [(source, *values.values())],
        suffix=f"ON CONFLICT (source) DO UPDATE SET {', '.join(updates)}",
    )
