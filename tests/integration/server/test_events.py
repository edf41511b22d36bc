"""Task and codebase events reach the right Redis channel, whatever the storage backend."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from codetether_contract.events import global_channel, shared_channel, worker_channel
from codetether_contract.models import ReleaseRequest, TaskCreate, TaskStatus
from tests.integration.server.conftest import Api


class Listener:
    def __init__(self, pubsub: Any) -> None:
        self.pubsub = pubsub

    async def next(self, within: float = 10.0) -> tuple[str, dict[str, Any]]:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            message = await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
            if message is not None:
                return message["channel"], json.loads(message["data"])
        raise AssertionError("no event arrived")

    async def nothing_pending(self) -> bool:
        return await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=0.3) is None


@pytest.fixture
async def listener(redis_base_url: str, redis_prefix: str) -> AsyncIterator[Listener]:
    client = aioredis.Redis.from_url(redis_base_url, decode_responses=True)
    pubsub = client.pubsub()
    await pubsub.subscribe(
        worker_channel("w1", redis_prefix),
        worker_channel("w2", redis_prefix),
        global_channel(redis_prefix),
        shared_channel(redis_prefix),
    )
    try:
        yield Listener(pubsub)
    finally:
        await pubsub.aclose()
        await client.aclose()


async def test_events_go_to_the_channel_of_whoever_may_run_the_task(
    api: Api, listener: Listener, redis_prefix: str
) -> None:
    w1, w2 = worker_channel("w1", redis_prefix), worker_channel("w2", redis_prefix)
    await api.worker("w1", capabilities=["agent", "gpu"])
    await api.worker("w2")

    pinned = await api.codebase("mine", worker_id="w1")
    channel, event = await listener.next()
    assert (channel, event["event"], event["codebase_id"], event["worker_id"]) == (
        w1,
        "codebase.assigned",
        pinned,
        "w1",
    )

    assert await api.codebase("mine", worker_id="w1") == pinned  # unchanged: no news
    task = await api.client.create_task(TaskCreate(title="t", prompt="p", codebase_id=pinned, priority=7))
    channel, event = await listener.next()
    assert channel == w1
    assert event["event"] == "task.available"
    assert (event["task_id"], event["worker_id"], event["priority"]) == (task.id, "w1", 7)

    glob = await api.client.create_task(TaskCreate(title="t", prompt="p"))
    channel, event = await listener.next()
    assert (channel, event["task_id"], event.get("worker_id")) == (
        global_channel(redis_prefix),
        glob.id,
        None,
    )

    shared = await api.codebase("shared")
    gpu = await api.client.create_task(
        TaskCreate(title="t", prompt="p", codebase_id=shared, metadata={"required_capabilities": ["gpu"]})
    )
    channel, event = await listener.next()
    assert (channel, event["task_id"], event["required_capabilities"]) == (
        shared_channel(redis_prefix),
        gpu.id,
        ["gpu"],
    )

    # A hand-back makes the task claimable again: announced again.
    await api.client.claim_task(task.id, "w1")
    await api.client.release_task(ReleaseRequest(task_id=task.id, status=TaskStatus.PENDING), "w1")
    channel, event = await listener.next()
    assert (channel, event["event"], event["task_id"]) == (w1, "task.available", task.id)

    # Moving a codebase tells both workers.
    await api.codebase("mine2", worker_id="w1", codebase_id="ns.mine2")
    assert (await listener.next())[0] == w1
    await api.codebase("mine2", worker_id="w2", codebase_id="ns.mine2")
    removed, assigned = await listener.next(), await listener.next()
    assert (removed[0], removed[1]["event"]) == (w1, "codebase.removed")
    assert (assigned[0], assigned[1]["event"]) == (w2, "codebase.assigned")

    await api.client.delete_codebase("ns.mine2")
    channel, event = await listener.next()
    assert (channel, event["event"], event["codebase_id"]) == (w2, "codebase.removed", "ns.mine2")
    assert await listener.nothing_pending()


async def test_a_requeue_after_lease_expiry_is_announced(
    serve: Any, listener: Listener, redis_prefix: str
) -> None:
    api: Api = await serve(A2A_LEASE_SECONDS="0.3")
    await api.worker("w2")
    shared = await api.codebase("shared")
    task = await api.client.create_task(TaskCreate(title="t", prompt="p", codebase_id=shared))
    assert (await listener.next())[1]["task_id"] == task.id
    await api.client.claim_task(task.id, "w2")
    channel, event = await listener.next()
    assert (channel, event["event"], event["task_id"]) == (
        shared_channel(redis_prefix),
        "task.available",
        task.id,
    )
    assert (await api.client.get_task(task.id)).attempts == 1
