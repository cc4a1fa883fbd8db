"""The `nudgespot-segment` command line."""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
from collections.abc import Callable, Sequence

from aiohttp import web

from inbound.formats import BUILTIN_FORMATS
from models import DatabaseInUse, Store
from service import __version__
from service.config import ConfigError, Settings, config_path, load_settings
from service.logs import configure_logging

EXIT_CONFIG = 2
EXIT_UNHEALTHY = 1
EXIT_IN_USE = 3  # serve: another process serves this SQLite database
DEFAULT_MAX_PENDING_AGE_S = 900.0
# Allocations (less deallocations) between two young-generation collections; default 700.
GC_THRESHOLD = 50_000


def main(argv: Sequence[str] | None = None) -> int:
    """Run a subcommand and return its exit status."""
    args = _parser().parse_args(argv)
    if not getattr(args, "needs_config", True):
        return args.command(None, args)
    path = config_path(args.config)
    try:
        settings = load_settings(path)
    except ConfigError as exc:
        print(f"config error in {path}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(settings.logging)
    command: Callable[[Settings, argparse.Namespace], int] = args.command
    return command(settings, args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nudgespot-segment",
        description="Carry Nudgespot email events into Segment as track calls.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="PATH",
        help="config file (default: $NUDGESPOT_SEGMENT_CONFIG, else ./config.yaml)",
    )
    sub = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")
    serve = sub.add_parser("serve", parents=[common], help="run the webhook and the publisher")
    serve.set_defaults(command=serve_command)
    migrate = sub.add_parser("migrate", parents=[common], help="apply database migrations")
    migrate.set_defaults(command=migrate_command)
    check = sub.add_parser("check-config", parents=[common], help="validate the config file")
    check.set_defaults(command=check_config_command)
    status = sub.add_parser("status", parents=[common], help="print per-source figures")
    status.add_argument("--check", action="store_true",
                        help="exit 1 when events are dead or the oldest pending is too old")
    status.add_argument("--max-pending-age-s", type=float, default=DEFAULT_MAX_PENDING_AGE_S,
                        metavar="SECONDS",
                        help="with --check: oldest pending age that counts as a problem "
                             f"(default {DEFAULT_MAX_PENDING_AGE_S:g})")
    status.add_argument("--json", action="store_true", help="print the JSON report instead")
    status.set_defaults(command=status_command)
    replay = sub.add_parser("replay", parents=[common],
                            help="put dead (or other) events back to pending")
    replay.add_argument("--source", help="only this source")
    replay.add_argument("--status", action="append", metavar="STATUS",
                        help="pending, delivered or dead (repeatable; default dead)")
    replay.add_argument("--since", metavar="ISO8601", help="received at or after this time")
    replay.add_argument("--until", metavar="ISO8601", help="received before this time")
    replay.add_argument("--event", action="append", metavar="NAME",
                        help="event type or alias (repeatable)")
    replay.add_argument("--id", action="append", dest="ids", metavar="EVENT_ID",
                        help="Nudgespot event id / dedup key (repeatable)")
    replay.add_argument("--dry-run", action="store_true", help="only count what would match")
    replay.add_argument("--rejected", action="store_true",
                        help="re-parse quarantined events and admit those now valid")
    replay.set_defaults(command=replay_command)
    preview = sub.add_parser(
        "preview", parents=[common],
        help="print the Segment messages a captured webhook body would become (sends nothing)")
    preview.add_argument("--source", required=True, help="the source whose format to use")
    preview.add_argument("file", nargs="?", default="-", metavar="FILE",
                         help="the captured body (default or '-': standard input)")
    preview.set_defaults(command=preview_command)
    schema = sub.add_parser("config-schema", parents=[common],
                            help="print the JSON Schema of config.yaml")
    schema.set_defaults(command=config_schema_command, needs_config=False)
    return parser


def check_config_command(settings: Settings, args: argparse.Namespace) -> int:
    """Report that the config is valid (loading it already validated it)."""
    names = ", ".join(f"{s.name} ({s.format})" for s in settings.sources)
    custom = len(settings.formats) - len(BUILTIN_FORMATS)
    extra = f"; {custom} format(s) of your own, every expression compiled" if custom else ""
    print(f"config ok: {len(settings.sources)} source(s): {names}{extra}")
    return 0


def migrate_command(settings: Settings, args: argparse.Namespace) -> int:
    """Apply all pending migrations to the configured database."""
    asyncio.run(Store(settings.database.url).migrate())
    print("migrations applied")
    return 0


def serve_command(settings: Settings, args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM; return 0 after a clean shutdown."""
    from service.app import create_app
    from service.metrics import Metrics
    from service.wiring import build_publisher

    metrics = Metrics()
    publisher = build_publisher(settings, observer=metrics)
    app = create_app(settings, publisher=publisher, metrics=metrics)
    tune_garbage_collector()
    try:
        web.run_app(
            app,
            host=settings.server.host,
            port=settings.server.port,
            shutdown_timeout=settings.server.shutdown_timeout_s,
            access_log=None,
            print=lambda message: print(message, file=sys.stderr),
        )
    except DatabaseInUse as exc:
        print(f"cannot serve: {exc}", file=sys.stderr)
        return EXIT_IN_USE
    return 0


def tune_garbage_collector() -> None:
    """Collect cycles less often: a batch in flight is thousands of live dicts, and the
    default thresholds made the collector walk them again and again (a third of the
    publisher's time under py-spy). What start-up loaded is frozen out of every walk."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 50, 100)


def status_command(settings: Settings, args: argparse.Namespace) -> int:
    """Print the per-source table; with --check, exit 1 when something needs attention."""
    from service.status_cli import print_status

    return asyncio.run(print_status(settings, args.check, args.max_pending_age_s, args.json))


def replay_command(settings: Settings, args: argparse.Namespace) -> int:
    """Requeue matching events (or admit quarantined ones) and print the counts."""
    from service.status_cli import replay_from_cli

    return asyncio.run(replay_from_cli(settings, args))


def config_schema_command(settings: Settings | None, args: argparse.Namespace) -> int:
    """Print the JSON Schema of config.yaml (no config file is read)."""
    import json

    from service.config_schema import config_schema

    print(json.dumps(config_schema(), indent=2))
    return 0


def preview_command(settings: Settings, args: argparse.Namespace) -> int:
    """Preview a captured body; exit 0 when everything mapped or was ignored, 1 otherwise."""
    from datetime import datetime, timezone

    from service.preview import EXIT_USAGE, preview

    try:
        if args.file == "-":
            raw = sys.stdin.buffer.read()
        else:
            with open(args.file, "rb") as handle:
                raw = handle.read()
    except OSError as exc:
        print(f"preview: cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    return preview(settings, args.source, raw, datetime.now(timezone.utc), sys.stdout, sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
