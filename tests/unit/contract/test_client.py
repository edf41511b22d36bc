"""The client's retry and error policy. Transport-level answers come from httpx.MockTransport, which
plays exactly the status codes under test; the real server is exercised by the integration suites."""

from __future__ import annotations

import json

import httpx
import pytest

from codetether_contract.client import (
    BadRequestError,
    CodetetherClient,
    ConflictError,
    NotFoundError,
    ServerUnavailableError,
    UnprocessableError,
    backoff_delay,
)
from codetether_contract.models import TaskCreate
from tests.support.services import free_port


def _client(handler, **kwargs) -> CodetetherClient:  # type: ignore[no-untyped-def]
    return CodetetherClient("http://server.test", transport=httpx.MockTransport(handler), **kwargs)


@pytest.mark.parametrize(
    ("status", "error"),
    [(400, BadRequestError), (404, NotFoundError), (409, ConflictError), (422, UnprocessableError)],
)
async def test_4xx_raise_typed_errors_with_the_detail(status: int, error: type) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json={"detail": "the reason"})

    async with _client(handler) as client:
        with pytest.raises(error) as exc:
            await client.get_task("t1")
    assert exc.value.detail == "the reason"
    assert exc.value.status_code == status


async def test_5xx_is_retried_for_idempotent_calls() -> None:
    calls = []

    async def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) < 3:
            return httpx.Response(503, json={"detail": "busy"})
        return httpx.Response(200, json={"workers": []})

    async with _client(handler, retries=3) as client:
        assert await client.list_workers() == []
    assert len(calls) == 3


async def test_creating_a_task_is_not_repeated_after_a_5xx() -> None:
    calls = []

    async def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(500, json={"detail": "boom"})

    async with _client(handler, retries=3) as client:
        with pytest.raises(Exception) as exc:
            await client.create_task(TaskCreate(title="t", prompt="p"))
    assert len(calls) == 1
    assert getattr(exc.value, "status_code", None) == 500


async def test_claim_sends_the_worker_header() -> None:
    seen: dict[str, str] = {}

    async def handler(request: httpx.Request) -> httpx.Response:
        seen["worker"] = request.headers["X-Worker-ID"]
        seen["body"] = request.content.decode()
        return httpx.Response(409, json={"detail": "taken"})

    async with _client(handler) as client:
        with pytest.raises(ConflictError):
            await client.claim_task("t1", "pool-0")
    assert seen["worker"] == "pool-0"
    assert json.loads(seen["body"]) == {"task_id": "t1"}


async def test_bearer_token_is_sent() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["Authorization"] == "Bearer s3cret"
        return httpx.Response(200, json={"workers": []})

    async with _client(handler, token="s3cret") as client:
        await client.list_workers()


async def test_connection_refused_ends_in_server_unavailable() -> None:
    # A real closed port: nothing listens there.
    async with CodetetherClient(f"http://127.0.0.1:{free_port()}", retries=1, timeout=2) as client:
        with pytest.raises(ServerUnavailableError):
            await client.list_workers()
        assert await client.health() is False


def test_backoff_is_bounded_and_jittered() -> None:
    delays = [backoff_delay(10) for _ in range(200)]
    assert all(0 <= d <= 5.0 for d in delays)
    assert len(set(delays)) > 100
    assert all(backoff_delay(0) <= 0.2 for _ in range(50))
