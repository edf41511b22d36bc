"""``codetether-worker`` / ``python -m codetether_worker``: parse options, then run the worker."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from codetether_worker import __version__
from codetether_worker.config import (
    CONFIG_ENV,
    DEFAULT_CONFIG_FILE,
    OPTIONS,
    TOKEN_ENV,
    ConfigError,
    WorkerConfig,
    load_config,
)

PROG = "codetether-worker"
EXIT_CONFIG = 2


class _OneLineParser(argparse.ArgumentParser):
    """Usage errors print one line naming the problem, like every other configuration error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_CONFIG, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog=PROG,
        description=(
            "Run a CodeTether worker: register with the server, receive tasks (Redis events, or polling), "
            "run the agent in the codebase folder, report output and results, sync agent sessions. "
            "Each option can come from a flag, an environment variable or the JSON config file; "
            "in that order of precedence."
        ),
        epilog=(
            f"The bearer token for the server is read from ${TOKEN_ENV} only. "
            "Invalid configuration exits with status 2. SIGTERM drains: no new claims, running tasks "
            "get --drain-timeout seconds, the rest is handed back to the server."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help=f"JSON config file (env {CONFIG_ENV}; default {DEFAULT_CONFIG_FILE} when it exists)",
    )
    for option in OPTIONS:
        text = f"{option.help} (env {option.env}; default {option.default_text})"
        if option.repeatable:
            parser.add_argument(
                *option.flags, dest=option.key, action="append", metavar=option.metavar, help=text
            )
        else:
            parser.add_argument(*option.flags, dest=option.key, metavar=option.metavar, help=text)
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    return parser


def parse_cli(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return vars(build_parser().parse_args(argv))


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Every request at INFO would drown the worker's own story.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    cli = parse_cli(argv)
    try:
        config: WorkerConfig = load_config(cli)
    except ConfigError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    setup_logging(config.log_level)
    log = logging.getLogger("codetether_worker")
    for warning in config.warnings:
        log.warning("%s", warning)

    from codetether_worker.runtime import run_worker

    # The standard loop on purpose: uvloop forks to spawn processes, stalling the loop as RSS grows.
    asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
    try:
        return asyncio.run(run_worker(config))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
