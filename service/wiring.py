"""Builds the production collaborators that create_app accepts."""

from __future__ import annotations

from service.app import Publisher
from service.config import Settings


def build_publisher(settings: Settings) -> Publisher | None:
    """Return the Segment publisher for these settings (None until republishing exists)."""
    return None
