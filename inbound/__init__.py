"""Ingest: the webhook, its authentication, and parsing of Nudgespot payloads into events."""
