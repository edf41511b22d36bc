"""The server restarts (PostgreSQL storage) while workers run: nothing is lost, nobody restarts."""

from __future__ import annotations

import asyncio

import pytest

from codetether_contract.models import TaskStatus
from tests.integration.worker.conftest import Harness


@pytest.fixture
def server_env(request: pytest.FixtureRequest, redis_base_url: str, redis_prefix: str) -> dict[str, str]:
    return {
        "A2A_REDIS_URL": redis_base_url,
        "A2A_REDIS_PREFIX": redis_prefix,
        "A2A_STORAGE": "postgres",
        "DATABASE_URL": request.getfixturevalue("database_url"),
        "A2A_LEASE_SECONDS": "15",  # the lease outlives the restart; heartbeats renew it after
    }


async def test_server_restart_while_workers_run(harness: Harness) -> None:
    a, b = harness.folder("a"), harness.folder("b")
    w1 = harness.fleet.worker("w-a", codebases={"a": a})
    w2 = harness.fleet.worker("w-b", codebases={"b": b}, reactive=False)
    await w1.wait_ready()
    await w2.wait_ready()
    a_id = await harness.codebase_id("a", "w-a")
    b_id = await harness.codebase_id("b", "w-b")

    before = [await harness.task("@sleep 3\n@append log.txt before", cid) for cid in (a_id, b_id)]
    await harness.running_on(before[0].id, "w-a")
    await harness.running_on(before[1].id, "w-b")

    harness.server.kill()
    await asyncio.sleep(1.0)  # workers notice: heartbeats and polls fail meanwhile
    await asyncio.to_thread(harness.server.start)

    done = await harness.finished([t.id for t in before], within=60)
    assert all(t.status is TaskStatus.COMPLETED for t in done), [t.error for t in done]
    after = [await harness.task("@append log.txt after", cid) for cid in (a_id, b_id)]
    done_after = await harness.finished([t.id for t in after], within=60)
    assert [t.worker_id for t in done_after] == ["w-a", "w-b"]
    assert (a / "log.txt").read_text() == "before\nafter\n"
    assert (b / "log.txt").read_text() == "before\nafter\n"
    workers = {w.id: w for w in await harness.client.list_workers()}
    assert set(workers) == {"w-a", "w-b"}
    assert all(w.status.value in ("active", "busy") for w in workers.values())
    assert w1.alive() and w2.alive()
