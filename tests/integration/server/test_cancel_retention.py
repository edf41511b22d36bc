"""Cancelling tasks by request, and deleting finished tasks after the retention, on every backend."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import redis.asyncio as aioredis

from codetether_contract.client import ConflictError, NotFoundError
from codetether_contract.events import worker_channel
from codetether_contract.models import ReleaseRequest, Task, TaskCreate, TaskStatus, TaskStatusUpdate
from codetether_server.service import Service
from tests.integration.server.conftest import Api, Serve
from tests.integration.server.helpers import eventually


def _service(api: Api) -> Service:
    service: Service = api.app.state.service
    return service


def _sweeper(api: Api, retention_seconds: float) -> Service:
    """The app's service on the same storage with another retention: the test decides when it sweeps
    (the app's own sweeper keeps the hour-long retention it was started with, so it deletes nothing)."""
    service = _service(api)
    settings = service.settings.model_copy(update={"task_retention_seconds": retention_seconds})
    return Service(service.store, settings, service.events, service.metrics)


async def _next_event(pubsub: Any) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
        return json.loads(message["data"]) if message else None

    return await eventually(probe, within=10)


async def test_cancel_pending_running_final_and_unknown(
    api: Api, redis_base_url: str, redis_prefix: str
) -> None:
    await api.worker("w1")
    codebase_id = await api.codebase("repo", worker_id="w1")
    queued = await api.client.create_task(TaskCreate(title="queued", prompt="p", codebase_id=codebase_id))
    busy = await api.client.create_task(TaskCreate(title="busy", prompt="p", codebase_id=codebase_id))

    cancelled = await api.client.cancel_task(queued.id)
    assert (cancelled.status, cancelled.error, cancelled.worker_id) == (
        TaskStatus.CANCELLED,
        "cancelled by request",
        None,
    )
    assert cancelled.completed_at is not None
    assert [t.id for t in await api.client.list_tasks(TaskStatus.PENDING, worker_id="w1")] == [busy.id]
    with pytest.raises(ConflictError, match="is cancelled"):
        await api.client.claim_task(queued.id, "w1")

    await api.client.claim_task(busy.id, "w1")
    await api.client.append_output(busy.id, "w1", "working\n")
    redis = aioredis.Redis.from_url(redis_base_url, decode_responses=True)
    pubsub = redis.pubsub()
    try:
        await pubsub.subscribe(worker_channel("w1", redis_prefix))
        stopped = await api.client.cancel_task(busy.id)
        event = await _next_event(pubsub)
    finally:
        await pubsub.aclose()
        await redis.aclose()
    assert (stopped.status, stopped.error, stopped.worker_id, stopped.lease_expires_at) == (
        TaskStatus.CANCELLED,
        "cancelled by request",
        "w1",
        None,
    )
    assert (event["event"], event["task_id"], event["worker_id"]) == ("task.cancelled", busy.id, "w1")

    # The holder's late report, release and output do not resurrect it; its heartbeat does not renew it.
    with pytest.raises(ConflictError, match="already cancelled"):
        await api.client.update_task_status(
            busy.id, TaskStatusUpdate(status=TaskStatus.COMPLETED, worker_id="w1", result="done")
        )
    with pytest.raises(ConflictError):
        await api.client.release_task(ReleaseRequest(task_id=busy.id, status=TaskStatus.PENDING), "w1")
    with pytest.raises(ConflictError, match="cancelled"):
        await api.client.append_output(busy.id, "w1", "late\n")
    await api.client.heartbeat("w1")
    after = await api.client.get_task(busy.id)
    assert (after.status, after.result, after.error) == (TaskStatus.CANCELLED, None, "cancelled by request")
    assert (await api.client.get_output(busy.id)).output == "working\n"

    answer = await api.http.post(f"/v1/agent/tasks/{busy.id}/cancel")
    assert answer.status_code == 409
    assert answer.json()["detail"] == (
        f"task {busy.id} is already cancelled: only pending or running tasks can be cancelled"
    )
    done = await api.client.create_task(TaskCreate(title="done", prompt="p", codebase_id=codebase_id))
    await api.client.claim_task(done.id, "w1")
    await api.client.update_task_status(
        done.id, TaskStatusUpdate(status=TaskStatus.COMPLETED, worker_id="w1")
    )
    with pytest.raises(ConflictError, match="already completed"):
        await api.client.cancel_task(done.id)
    with pytest.raises(NotFoundError):
        await api.client.cancel_task("no-such-task")
    metrics = (await api.http.get("/metrics")).text
    assert 'codetether_server_tasks_cancelled_total{from_status="pending"} 1.0' in metrics
    assert 'codetether_server_tasks_cancelled_total{from_status="running"} 1.0' in metrics


async def _tasks_in_every_state(api: Api, codebase_id: str) -> dict[str, Task]:
    made = {
        name: await api.client.create_task(TaskCreate(title=name, prompt="p", codebase_id=codebase_id))
        for name in ("completed", "failed", "cancelled", "running", "pending")
    }
    for name in ("completed", "failed", "running"):
        await api.client.claim_task(made[name].id, "w1")
        await api.client.append_output(made[name].id, "w1", f"{name} output\n")
    for status in (TaskStatus.COMPLETED, TaskStatus.FAILED):
        await api.client.update_task_status(
            made[status.value].id, TaskStatusUpdate(status=status, worker_id="w1")
        )
    await api.client.cancel_task(made["cancelled"].id)
    return made


async def _exists(api: Api, task_id: str) -> bool:
    try:
        await api.client.get_task(task_id)
    except NotFoundError:
        return False
    return True


async def test_the_sweeper_deletes_finished_tasks_and_their_output_after_the_retention(serve: Serve) -> None:
    api = await serve(A2A_TASK_RETENTION_SECONDS="0.5")
    await api.worker("w1")
    codebase_id = await api.codebase("repo", worker_id="w1")
    made = await _tasks_in_every_state(api, codebase_id)
    finished = [made[name].id for name in ("completed", "failed", "cancelled")]

    async def all_gone() -> bool:
        return not any([await _exists(api, task_id) for task_id in finished])

    await eventually(all_gone, within=30)
    store = _service(api).store
    for task_id in finished:
        assert (await store.get_output(task_id)).output == ""
    assert (await api.client.get_task(made["running"].id)).status is TaskStatus.RUNNING
    assert (await api.client.get_task(made["pending"].id)).status is TaskStatus.PENDING
    assert (await api.client.get_output(made["running"].id)).output == "running output\n"
    counts = await store.count_tasks()
    assert counts == {TaskStatus.RUNNING: 1, TaskStatus.PENDING: 1}
    assert sorted(t.id for t in await api.client.list_tasks()) == sorted(
        [made["running"].id, made["pending"].id]
    )
    metrics = (await api.http.get("/metrics")).text
    assert "codetether_server_tasks_deleted_total 3.0" in metrics


async def test_zero_retention_keeps_finished_tasks(serve: Serve) -> None:
    api = await serve(A2A_TASK_RETENTION_SECONDS="0")
    await api.worker("w1")
    made = await _tasks_in_every_state(api, await api.codebase("repo", worker_id="w1"))
    assert await _service(api).sweep_finished_tasks() == 0
    for task in made.values():
        assert await _exists(api, task.id)


async def test_replicas_sweeping_at_once_delete_each_task_once(serve: Serve, backend: str) -> None:
    first = await serve(A2A_TASK_RETENTION_SECONDS="3600")
    # Memory storage lives in one process: there the two sweeps share one replica.
    second = first if backend == "memory" else await serve(A2A_TASK_RETENTION_SECONDS="3600")
    await first.worker("w1")
    codebase_id = await first.codebase("repo", worker_id="w1")
    ids = []
    for n in range(40):
        task = await first.client.create_task(TaskCreate(title=f"t{n}", prompt="p", codebase_id=codebase_id))
        await first.client.cancel_task(task.id)
        ids.append(task.id)
    keep = await first.client.create_task(TaskCreate(title="keep", prompt="p", codebase_id=codebase_id))
    await asyncio.sleep(0.01)  # past the 1 ms retention of the sweeps below

    sweepers = [_sweeper(api, 0.001) for api in (first, second, first, second)]
    deleted = await asyncio.gather(*(sweeper.sweep_finished_tasks(batch=100) for sweeper in sweepers))
    assert sum(deleted) == len(ids)
    assert not any([await _exists(second, task_id) for task_id in ids])
    assert await _exists(second, keep.id)
    assert await sweepers[0].sweep_finished_tasks() == 0


@pytest.mark.parametrize("backend", ["redis"])  # the finished-task index is Redis storage's
async def test_redis_indexes_tasks_finished_before_the_index_existed_once(
    serve: Serve, redis_base_url: str, redis_prefix: str
) -> None:
    old = await serve(A2A_TASK_RETENTION_SECONDS="3600")
    await old.worker("w1")
    task = await old.client.create_task(
        TaskCreate(title="old", prompt="p", codebase_id=await old.codebase("repo", worker_id="w1"))
    )
    await old.client.cancel_task(task.id)
    # As a server from before the index left it: the task stored, no index, no marker.
    redis = aioredis.Redis.from_url(redis_base_url)
    try:
        await redis.delete(f"{redis_prefix}:tasks:finished", f"{redis_prefix}:tasks:finished:indexed")
    finally:
        await redis.aclose()
    await asyncio.sleep(0.01)

    upgraded = await serve(A2A_TASK_RETENTION_SECONDS="3600")
    assert await _sweeper(upgraded, 0.001).sweep_finished_tasks() == 1
    assert not await _exists(upgraded, task.id)
