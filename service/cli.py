"""The `nudgespot-segment` command line."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence

from aiohttp import web

from models import Store
from service import __version__
from service.config import ConfigError, Settings, config_path, load_settings
from service.logs import configure_logging

EXIT_CONFIG = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run a subcommand and return its exit status."""
    args = _parser().parse_args(argv)
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
    return parser


def check_config_command(settings: Settings, args: argparse.Namespace) -> int:
    """Report that the config is valid (loading it already validated it)."""
    names = ", ".join(s.name for s in settings.sources)
    print(f"config ok: {len(settings.sources)} source(s): {names}")
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
    web.run_app(
        app,
        host=settings.server.host,
        port=settings.server.port,
        shutdown_timeout=settings.server.shutdown_timeout_s,
        access_log=None,
        print=lambda message: print(message, file=sys.stderr),
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
