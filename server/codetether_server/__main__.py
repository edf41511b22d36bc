"""``codetether-server`` / ``python -m codetether_server``: run the server with uvicorn."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from codetether_server import __version__
from codetether_server.settings import SETTINGS, Settings, SettingsError

log = logging.getLogger("codetether_server")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="codetether-server",
        description=(
            "A compact CodeTether-compatible task server. Every option defaults to its environment "
            "variable; a command-line value wins. API docs are served at /docs and /openapi.json."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    for spec in SETTINGS:
        flag = "--" + spec.field.replace("_", "-")
        shown = "(empty)" if spec.default == "" else spec.default
        secret = spec.env in ("DATABASE_URL", "A2A_AUTH_TOKENS", "A2A_REDIS_URL")
        parser.add_argument(
            flag,
            dest=spec.field,
            default=None,
            metavar="VALUE",
            help=f"{spec.help} Env {spec.env}; default {shown}."
            + (" Prefer the environment for secrets." if secret else ""),
        )
    return parser


def settings_from(args: argparse.Namespace, environ: dict[str, str] | os._Environ[str]) -> Settings:
    values: dict[str, str] = {}
    for spec in SETTINGS:
        given = getattr(args, spec.field)
        values[spec.field] = given if given is not None else environ.get(spec.env, spec.default)
    return Settings.from_values(values)


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from(args, os.environ)
    except SettingsError as exc:
        print(f"codetether-server: bad setting: {exc}", file=sys.stderr)
        raise SystemExit(2) from None

    import uvicorn

    from codetether_server import logs
    from codetether_server.app import create_app

    logs.configure(settings.log_level)
    app = create_app(settings)
    log.info("listening", extra={"host": settings.host, "port": settings.port, "storage": settings.storage})
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        http="httptools",
        loop="asyncio",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )


if __name__ == "__main__":
    main()
