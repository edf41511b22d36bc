"""A server that wants a bearer token: the worker sends A2A_AUTH_TOKEN; without it, it is not ready."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from codetether_contract.models import TaskStatus
from tests.integration.worker.conftest import Harness, WorkerProcess, wait_until


@pytest.fixture
def server_env(redis_base_url: str, redis_prefix: str) -> dict[str, str]:
    return {
        "A2A_REDIS_URL": redis_base_url,
        "A2A_REDIS_PREFIX": redis_prefix,
        "A2A_AUTH_TOKENS": "good-token,other-token",
    }


async def test_token_from_the_environment(harness: Harness) -> None:
    worker = harness.fleet.worker(
        "w-auth", codebases={"a": harness.folder("a")}, env={"A2A_AUTH_TOKEN": "other-token"}
    )
    await worker.wait_ready()
    codebase_id = await harness.codebase_id("a")
    task = await harness.task("@echo authorised", codebase_id)
    [done] = await harness.finished([task.id])
    assert done.status is TaskStatus.COMPLETED and done.result == "authorised"


async def test_a_refused_token_keeps_the_worker_unready(harness: Harness) -> None:
    worker = harness.fleet.worker("w-refused", env={"A2A_AUTH_TOKEN": "wrong"})
    await wait_until(_attempts(worker, 2), what="two refused registrations")
    assert worker.alive()
    assert not await worker.readyz()
    assert "403" in worker.log() or "401" in worker.log()
    assert await harness.client.list_workers() == []


def _attempts(worker: WorkerProcess, count: int) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return worker.log().count("registration failed") >= count

    return probe
