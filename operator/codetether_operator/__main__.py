"""``codetether-operator`` / ``python -m codetether_operator``: run kopf with our handlers and settings."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from codetether_operator import metrics
from codetether_operator.settings import OperatorSettings, configure_kopf, load

log = logging.getLogger("codetether_operator")


async def run(
    settings: OperatorSettings,
    *,
    stop_flag: asyncio.Event | threading.Event | None = None,
    ready_flag: asyncio.Event | threading.Event | None = None,
    kube: Any = None,
) -> None:
    """Run the operator until ``stop_flag`` is set (or SIGTERM/SIGINT when run as a program)."""
    import kopf

    from codetether_operator import handlers
    from codetether_operator.kube import Kube
    from codetether_operator.runtime import Runtime

    registry = kopf.OperatorRegistry()
    runtime = Runtime.create(settings, kube or Kube.from_environment())
    handlers.register(registry, runtime)
    kopf_settings = kopf.OperatorSettings()
    configure_kopf(
        kopf_settings, settings
    )  # peering too: kopf.operator(peering_name=) would make it mandatory
    liveness = f"http://0.0.0.0:{settings.liveness_port}/healthz" if settings.liveness_port else None
    try:
        await kopf.operator(
            registry=registry,
            settings=kopf_settings,
            clusterwide=settings.cluster_wide,
            namespaces=settings.namespaces,
            liveness_endpoint=liveness,
            stop_flag=stop_flag,
            ready_flag=ready_flag,
        )
    finally:
        await runtime.aclose()


def main(argv: list[str] | None = None) -> None:
    settings = load(argv)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    scope = "cluster-wide" if settings.cluster_wide else f"namespaces {', '.join(settings.namespaces)}"
    log.info(
        "codetether-operator starting: %s, peering %s",
        scope,
        "off" if settings.standalone else settings.peering,
    )
    metrics.serve(settings.metrics_port)
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
