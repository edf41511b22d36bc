"""Operator settings: environment variables and command-line flags (flags win), and kopf's settings.

Every setting has an environment variable so the Helm chart can set it; ``--help`` lists them.
"""

from __future__ import annotations

import argparse
import os
import random
from dataclasses import dataclass, field
from typing import Any

ENV_PREFIX = "CODETETHER_OPERATOR_"
PERSISTENCE_PREFIX = "codetether.run"
FINALIZER = "codetether.run/finalizer"


@dataclass
class OperatorSettings:
    namespaces: list[str] = field(default_factory=list)  # empty: cluster-wide
    peering: str = "codetether-operator"
    standalone: bool = False
    priority: int | None = None  # None: a random one per process, so replicas never tie
    server_url_override: str | None = None
    metrics_port: int = 8080  # 0 disables
    liveness_port: int = 8081  # 0 disables
    pool_resync_seconds: float = 30.0
    codebase_resync_seconds: float = 60.0
    server_timeout_seconds: float = 10.0
    finalizer_timeout_seconds: float = 120.0
    watch_server_timeout: int = 300
    watch_client_timeout: int = 330
    log_level: str = "INFO"

    @property
    def cluster_wide(self) -> bool:
        return not self.namespaces


@dataclass(frozen=True)
class _Option:
    attr: str
    flag: str
    kind: type
    help: str


_OPTIONS = [
    _Option(
        "namespaces", "--namespace", list, "namespace to watch; repeat or comma-separate; empty: cluster-wide"
    ),
    _Option("peering", "--peering", str, "kopf peering name: replicas sharing it elect one active operator"),
    _Option("standalone", "--standalone", bool, "no peering (a single replica; also for tests)"),
    _Option(
        "priority",
        "--priority",
        int,
        "kopf peering priority; the highest live replica is active (default: random per start-up)",
    ),
    _Option(
        "server_url_override",
        "--server-url",
        str,
        "reach every pool's server at this URL instead of spec.server.url",
    ),
    _Option("metrics_port", "--metrics-port", int, "Prometheus /metrics port (0: off)"),
    _Option("liveness_port", "--liveness-port", int, "kopf liveness /healthz port (0: off)"),
    _Option("pool_resync_seconds", "--pool-resync", float, "seconds between pool status refreshes"),
    _Option(
        "codebase_resync_seconds",
        "--codebase-resync",
        float,
        "seconds between checks that the server still has each codebase",
    ),
    _Option(
        "server_timeout_seconds", "--server-timeout", float, "timeout of one call to a CodeTether server"
    ),
    _Option(
        "finalizer_timeout_seconds",
        "--finalizer-timeout",
        float,
        "give up removing a codebase from an unreachable server after this long",
    ),
    _Option(
        "watch_server_timeout",
        "--watch-server-timeout",
        int,
        "server-side timeout of a watch request (seconds)",
    ),
    _Option(
        "watch_client_timeout",
        "--watch-client-timeout",
        int,
        "client-side timeout of a watch request (seconds)",
    ),
    _Option("log_level", "--log-level", str, "DEBUG, INFO, WARNING or ERROR"),
]


def env_name(attr: str) -> str:
    return ENV_PREFIX + {"namespaces": "NAMESPACES"}.get(attr, attr.upper().removesuffix("_SECONDS"))


def build_parser() -> argparse.ArgumentParser:
    defaults = OperatorSettings()
    parser = argparse.ArgumentParser(
        prog="codetether-operator",
        description="Kubernetes operator for CodeTether worker pools (CodetetherWorkerPool, Codebase).",
        epilog="Every flag also reads an environment variable (shown in brackets); flags win.",
    )
    for option in _OPTIONS:
        default = getattr(defaults, option.attr)
        env = env_name(option.attr)
        if option.kind is bool:
            parser.add_argument(option.flag, action="store_true", default=None, help=f"{option.help} [{env}]")
        elif option.kind is list:
            parser.add_argument(
                option.flag, action="append", dest=option.attr, default=None, help=f"{option.help} [{env}]"
            )
        else:
            parser.add_argument(
                option.flag,
                dest=option.attr,
                metavar=option.flag.strip("-").upper().replace("-", "_"),
                type=option.kind,
                default=None,
                help=f"{option.help}{f' (default: {default})' if default is not None else ''} [{env}]",
            )
    return parser


def _split(values: list[str]) -> list[str]:
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def load(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> OperatorSettings:
    """Flags > ``CODETETHER_OPERATOR_*`` environment > defaults. Bad values exit with the name."""
    environ = dict(os.environ if environ is None else environ)
    parser = build_parser()
    args = parser.parse_args(argv)
    settings = OperatorSettings()
    for option in _OPTIONS:
        value: Any = getattr(args, option.attr, None)
        env = env_name(option.attr)
        if value is None and environ.get(env, "") != "":
            raw = environ[env]
            try:
                if option.kind is bool:
                    value = raw.strip().lower() in ("1", "true", "yes", "on")
                elif option.kind is list:
                    value = [raw]
                else:
                    value = option.kind(raw)
            except ValueError:
                parser.error(f"{env}={raw!r}: not a valid {option.kind.__name__}")
        if value is None:
            continue
        if option.kind is list:
            value = _split(value)
        setattr(settings, option.attr, value)
    for attr in ("metrics_port", "liveness_port"):
        port = getattr(settings, attr)
        if not 0 <= port <= 65535:
            parser.error(f"{attr.replace('_', '-')}: {port} is not a port")
    if settings.server_url_override and not settings.server_url_override.startswith(("http://", "https://")):
        parser.error("--server-url must start with http:// or https://")
    return settings


def configure_kopf(kopf_settings: Any, settings: OperatorSettings) -> None:
    """kopf's settings, chosen on purpose (see docs/operator.md)."""
    import kopf

    # Our own names for kopf's bookkeeping, so nothing says "kopf.zalando.org" on users' objects.
    kopf_settings.persistence.finalizer = FINALIZER
    kopf_settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PERSISTENCE_PREFIX)
    kopf_settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=PERSISTENCE_PREFIX, key="last-handled-configuration"
    )
    # Watches end server-side before any proxy/load balancer cuts them; the client waits a bit longer.
    kopf_settings.watching.server_timeout = settings.watch_server_timeout
    kopf_settings.watching.client_timeout = settings.watch_client_timeout
    kopf_settings.watching.connect_timeout = 30
    kopf_settings.networking.request_timeout = 60
    # Peering: replicas with the same name elect one active operator; without the peering CRDs
    # installed the operator runs alone rather than refusing to start.
    kopf_settings.peering.name = settings.peering
    kopf_settings.peering.standalone = settings.standalone
    kopf_settings.peering.mandatory = False
    kopf_settings.peering.clusterwide = settings.cluster_wide
    # kopf pauses every operator that shares the top priority, so replicas must never tie: a random
    # priority per process leaves exactly one active (a restarted replica may take over; harmless).
    kopf_settings.peering.priority = (
        settings.priority if settings.priority is not None else random.SystemRandom().randint(1, 2**31 - 1)
    )
    # Events at INFO and above only: debug chatter stays in logs, not in `kubectl describe`.
    kopf_settings.posting.level = 20
