"""Prometheus metrics of the operator (served on ``--metrics-port``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

REGISTRY = CollectorRegistry(auto_describe=True)

RECONCILES = Counter(
    "codetether_operator_reconciles_total",
    "Reconciliations by kind and result (ok, error, degraded).",
    ["kind", "result"],
    registry=REGISTRY,
)
RECONCILE_SECONDS = Histogram(
    "codetether_operator_reconcile_duration_seconds",
    "Duration of one reconciliation.",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
SERVER_ERRORS = Counter(
    "codetether_operator_server_errors_total",
    "Failed calls to a CodeTether server, by operation and error.",
    ["operation", "error"],
    registry=REGISTRY,
)
POOLS = Gauge("codetether_operator_pools", "Pools by phase.", ["phase"], registry=REGISTRY)
CODEBASES = Gauge("codetether_operator_codebases", "Codebases by phase.", ["phase"], registry=REGISTRY)


class PhaseTracker:
    """Phase of every object seen, summarised into a gauge."""

    def __init__(self, gauge: Gauge, phases: list[str]) -> None:
        self._gauge = gauge
        self._phases = phases
        self._by_key: dict[str, str] = {}
        for phase in phases:
            gauge.labels(phase=phase).set(0)

    def set(self, key: str, phase: str | None) -> None:
        if phase is None:
            self._by_key.pop(key, None)
        else:
            self._by_key[key] = phase
        counts = dict.fromkeys(self._phases, 0)
        for value in self._by_key.values():
            counts[value] = counts.get(value, 0) + 1
        for name, count in counts.items():
            self._gauge.labels(phase=name).set(count)


@contextmanager
def timed(kind: str) -> Iterator[dict[str, str]]:
    """Count and time one reconciliation; the body sets ``result['result']`` when not ``ok``."""
    outcome = {"result": "ok"}
    started = time.perf_counter()
    try:
        yield outcome
    except BaseException:
        outcome["result"] = "error"
        raise
    finally:
        RECONCILE_SECONDS.labels(kind=kind).observe(time.perf_counter() - started)
        RECONCILES.labels(kind=kind, result=outcome["result"]).inc()


def serve(port: int, host: str = "0.0.0.0") -> None:
    if port:
        start_http_server(port, addr=host, registry=REGISTRY)
