"""Tortoise config for the `tortoise makemigrations` developer command (see `make migrations`)."""

import os

from models.database import tortoise_config

TORTOISE_ORM = tortoise_config(
    os.environ.get("NUDGESPOT_SEGMENT_MIGRATION_DB", "sqlite://data/makemigrations.sqlite3"),
    connection_name="default",
)
