"""Tortoise config for the `tortoise makemigrations` developer command (see `make migrations`)."""

import os

from models.database import config_for_url

TORTOISE_ORM = config_for_url(
    os.environ.get("NUDGESPOT_SEGMENT_MIGRATION_DB", "sqlite://data/makemigrations.sqlite3"),
    connection_name="default",
)
