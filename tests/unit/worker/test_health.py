"""Health endpoints over a real socket, and the metrics they expose."""

from __future__ import annotations

import asyncio

import httpx

from codetether_worker.health import HealthServer, WorkerMetrics, answer


def test_answers() -> None:
    metrics = WorkerMetrics()
    assert answer("GET", "/healthz", lambda: (False, "x"), metrics).status == 200
    assert answer("GET", "/readyz", lambda: (False, "not registered"), metrics).status == 503
    assert answer("GET", "/readyz?verbose=1", lambda: (True, "ok"), metrics).status == 200
    assert answer("GET", "/nope", lambda: (True, ""), metrics).status == 404
    assert answer("POST", "/healthz", lambda: (True, ""), metrics).status == 405


def test_delivery_mode_is_one_hot() -> None:
    metrics = WorkerMetrics()
    metrics.set_delivery_mode("reactive")
    text = metrics.render().decode()
    assert 'codetether_worker_delivery_mode{mode="reactive"} 1.0' in text
    assert 'codetether_worker_delivery_mode{mode="polling"} 0.0' in text


async def test_server_over_http() -> None:
    metrics = WorkerMetrics()
    state = {"ready": False}
    server = HealthServer("127.0.0.1", 0, lambda: (state["ready"], "why"), metrics)
    await server.start()
    try:
        metrics.tasks_claimed.inc()
        metrics.tasks_completed.labels(status="completed").inc(2)
        metrics.dispatch_latency.observe(0.02)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            assert (await client.get("/healthz")).json() == {"status": "ok"}
            not_ready = await client.get("/readyz")
            assert not_ready.status_code == 503 and not_ready.json()["detail"] == "why"
            state["ready"] = True
            assert (await client.get("/readyz")).status_code == 200
            body = (await client.get("/metrics")).text
            assert "codetether_worker_tasks_claimed_total 1.0" in body
            assert 'codetether_worker_tasks_completed_total{status="completed"} 2.0' in body
            assert 'codetether_worker_dispatch_latency_seconds_bucket{le="0.025"} 1.0' in body
            assert "codetether_worker_active_tasks 0.0" in body
            assert (await client.get("/other")).status_code == 404
        # A client that never finishes its request does not wedge the server.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GARBAGE\r\n\r\n")
        await writer.drain()
        assert (await reader.read()).startswith(b"HTTP/1.1 400")
        writer.close()
    finally:
        await server.stop()
