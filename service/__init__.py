"""Composition root: config, application factory, scheduler wiring, CLI, admin views."""

__version__ = "0.1.0"
