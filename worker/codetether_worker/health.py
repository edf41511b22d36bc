"""``/healthz``, ``/readyz`` and ``/metrics`` on the worker's health port.

Three GET endpoints do not need a web framework: a small HTTP/1.1 responder on ``asyncio.start_server``
answers them and closes the connection. The metrics live in their own registry so several workers can
share a test process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

log = logging.getLogger(__name__)

DELIVERY_MODES = ("reactive", "polling")
MAX_REQUEST_HEAD = 8192
REQUEST_READ_TIMEOUT = 5.0


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.tasks_claimed = Counter(
            "codetether_worker_tasks_claimed", "Tasks this worker claimed", registry=r
        )
        self.claim_conflicts = Counter(
            "codetether_worker_claim_conflicts", "Claims refused: taken, finished or not eligible", registry=r
        )
        self.tasks_completed = Counter(
            "codetether_worker_tasks_completed",
            "Tasks ended here, by outcome: completed, failed, handed_back, abandoned (lease lost)",
            ["status"],
            registry=r,
        )
        self.task_duration = Histogram(
            "codetether_worker_task_duration_seconds",
            "Agent run time per task",
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
            registry=r,
        )
        self.dispatch_latency = Histogram(
            "codetether_worker_dispatch_latency_seconds",
            "Time from task creation on the server to the agent process starting",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.active_tasks = Gauge("codetether_worker_active_tasks", "Tasks running now", registry=r)
        self.delivery_mode = Gauge(
            "codetether_worker_delivery_mode",
            "1 for the current task delivery mode (reactive: Redis events; polling)",
            ["mode"],
            registry=r,
        )
        self.server_errors = Counter(
            "codetether_worker_server_errors",
            "Failed calls to the server, by operation",
            ["operation"],
            registry=r,
        )
        self.redis_reconnects = Counter(
            "codetether_worker_redis_connects", "Successful (re)connections to Redis", registry=r
        )
        self.set_delivery_mode("polling")

    def set_delivery_mode(self, mode: str) -> None:
        for name in DELIVERY_MODES:
            self.delivery_mode.labels(mode=name).set(1 if name == mode else 0)

    def render(self) -> bytes:
        return generate_latest(self.registry)


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    content_type: str = "application/json"


_REASONS = {
    200: "OK",
    404: "Not Found",
    405: "Method Not Allowed",
    400: "Bad Request",
    503: "Service Unavailable",
}


def _json(status: int, payload: dict[str, object]) -> Reply:
    return Reply(status, json.dumps(payload).encode() + b"\n")


def answer(method: str, path: str, ready: Callable[[], tuple[bool, str]], metrics: WorkerMetrics) -> Reply:
    """The reply for one request; pure apart from reading the readiness and metrics."""
    path = path.split("?", 1)[0]
    if method not in ("GET", "HEAD"):
        return _json(405, {"detail": "only GET"})
    if path == "/healthz":
        return _json(200, {"status": "ok"})
    if path == "/readyz":
        is_ready, reason = ready()
        return _json(
            200 if is_ready else 503, {"status": "ok" if is_ready else "unavailable", "detail": reason}
        )
    if path == "/metrics":
        return Reply(200, metrics.render(), CONTENT_TYPE_LATEST)
    return _json(404, {"detail": f"no such path: {path}"})


def encode_reply(reply: Reply, *, head_only: bool = False) -> bytes:
    reason = _REASONS.get(reply.status, "OK")
    head = (
        f"HTTP/1.1 {reply.status} {reason}\r\n"
        f"Content-Type: {reply.content_type}\r\n"
        f"Content-Length: {len(reply.body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode("latin-1")
    return head if head_only else head + reply.body


class HealthServer:
    def __init__(
        self, host: str, port: int, ready: Callable[[], tuple[bool, str]], metrics: WorkerMetrics
    ) -> None:
        self.host = host
        self.port = port
        self._ready = ready
        self._metrics = metrics
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("health endpoints on http://%s:%d (/healthz /readyz /metrics)", self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_READ_TIMEOUT)
            request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
            parts = request_line.split()
            if len(parts) != 3 or not parts[2].startswith("HTTP/"):
                reply, method = _json(400, {"detail": "bad request line"}), "GET"
            else:
                method, target = parts[0], parts[1]
                reply = answer(method, target, self._ready, self._metrics)
            writer.write(encode_reply(reply, head_only=method == "HEAD"))
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
