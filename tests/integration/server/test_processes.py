"""The server as users run it: real processes, real HTTP, several replicas, SIGKILL and restart."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from codetether_contract.client import CodetetherClient
from codetether_contract.models import (
    CodebaseCreate,
    MessageSummary,
    SessionInfo,
    TaskCreate,
    TaskStatus,
    TaskStatusUpdate,
    WorkerRegistration,
)
from tests.integration.server.helpers import eventually
from tests.support.server import ServerProcess


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[list[ServerProcess]]:
    """Server processes a test starts; all stopped afterwards."""
    started: list[ServerProcess] = []
    try:
        yield started
    finally:
        for process in started:
            process.stop()


def _start(processes: list[ServerProcess], env: dict[str, str], log_dir: Path) -> ServerProcess:
    server = ServerProcess(env=env, log_dir=log_dir)
    processes.append(server)
    return server.start()


@pytest.mark.parametrize("backend", ["memory", "redis", "postgres"])
async def test_a_worker_round_trip_over_real_http(
    backend: str,
    processes: list[ServerProcess],
    tmp_path: Path,
    redis_base_url: str,
    redis_prefix: str,
    request: pytest.FixtureRequest,
) -> None:
    env = {
        "A2A_STORAGE": backend,
        "A2A_REDIS_URL": redis_base_url,
        "A2A_REDIS_PREFIX": redis_prefix,
        "A2A_AUTH_TOKENS": "s3cret",
    }
    if backend == "postgres":
        env["DATABASE_URL"] = request.getfixturevalue("database_url")
    server = _start(processes, env, tmp_path)
    async with CodetetherClient(server.url, token="s3cret") as client:
        await client.register_worker(WorkerRegistration(worker_id="pod-0", capabilities=["agent", "build"]))
        codebase = await client.register_codebase(
            CodebaseCreate(name="app", path="/codebases/app", worker_id="pod-0", codebase_id="default.app")
        )
        task = await client.create_task(TaskCreate(title="Fix", prompt="fix it", codebase_id=codebase.id))
        assert [t.id for t in await client.list_tasks(TaskStatus.PENDING, "pod-0")] == [task.id]
        claim = await client.claim_task(task.id, "pod-0")
        assert claim.task.worker_id == "pod-0"
        await client.append_output(task.id, "pod-0", '{"type":"text","text":"done"}\n')
        await client.heartbeat("pod-0")
        done = await client.update_task_status(
            task.id, TaskStatusUpdate(status=TaskStatus.COMPLETED, worker_id="pod-0", result="done")
        )
        assert done.status is TaskStatus.COMPLETED
        assert (await client.get_output(task.id)).output == '{"type":"text","text":"done"}\n'
        assert await client.sync_sessions(codebase.id, "pod-0", [SessionInfo(id="s1", title="Fix")]) == 1
        [worker] = await client.list_workers()
        assert (worker.codebases, worker.tasks_completed) == (1, 1)
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert (await http.get("/v1/agent/workers")).status_code == 401
        assert "codetether_server_requests_total" in (await http.get("/metrics")).text


def _start_together(servers: list[ServerProcess]) -> None:
    """Start replicas at the same moment: their schema migrations race (and must not fail)."""
    errors: list[BaseException] = []

    def run(server: ServerProcess) -> None:
        try:
            server.start()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in servers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def _claim_request(task_id: str, worker_id: str) -> bytes:
    body = json.dumps({"task_id": task_id}).encode()
    head = (
        "POST /v1/worker/tasks/claim HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"X-Worker-ID: {worker_id}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


async def _status_of_response(reader: asyncio.StreamReader) -> int:
    response = await reader.read()  # Connection: close, so the server ends the stream
    assert response.startswith(b"HTTP/1.1 "), f"not an HTTP response: {response[:200]!r}"
    return int(response.split(b" ", 2)[1])


async def _claim_burst(claims: list[tuple[ServerProcess, str, str]]) -> list[int]:
    """Send every (replica, task_id, worker_id) claim at once; the HTTP status of each, in order.

    Connections are opened first and the request bytes written in one loop with no await between
    them, so all claims reach the replicas within a millisecond or so. Through an HTTP client
    library, building and sending each request takes long enough that the first claim is answered
    before the last one is sent, and a missing lock across replicas goes unnoticed.
    """
    connections = await asyncio.gather(
        *(asyncio.open_connection("127.0.0.1", replica.port) for replica, _, _ in claims)
    )
    try:
        for (_, writer), (_, task_id, worker_id) in zip(connections, claims, strict=True):
            writer.write(_claim_request(task_id, worker_id))
        return list(await asyncio.gather(*(_status_of_response(reader) for reader, _ in connections)))
    finally:
        for _, writer in connections:
            writer.close()


CLAIM_ROUNDS = 3
TASKS_PER_ROUND = 24
CLAIMANTS_PER_TASK = 8
WORKER_COUNT = 24


@pytest.mark.parametrize("backend", ["postgres", "redis"])
async def test_two_replicas_claim_exactly_once_and_sweep_once(
    backend: str,
    processes: list[ServerProcess],
    tmp_path: Path,
    redis_base_url: str,
    redis_prefix: str,
    request: pytest.FixtureRequest,
) -> None:
    env = {
        "A2A_STORAGE": backend,
        "A2A_REDIS_URL": redis_base_url,
        "A2A_REDIS_PREFIX": redis_prefix,
        "A2A_LEASE_SECONDS": "2",
        "A2A_LEASE_SWEEP_INTERVAL": "0.1",
        "A2A_MAX_ATTEMPTS": "5",
        "A2A_DB_POOL_SIZE": "20",
    }
    if backend == "postgres":
        env["DATABASE_URL"] = request.getfixturevalue("database_url")
    replicas = [ServerProcess(env=env, log_dir=tmp_path) for _ in range(2)]
    processes.extend(replicas)
    _start_together(replicas)
    a, b = (CodetetherClient(r.url) for r in replicas)
    try:
        workers = [f"pod-{i}" for i in range(WORKER_COUNT)]
        for worker_id in workers:
            await a.register_worker(WorkerRegistration(worker_id=worker_id))
        shared = await b.register_codebase(CodebaseCreate(name="shared", path="/shared"))
        all_task_ids: list[str] = []
        for round_number in range(CLAIM_ROUNDS):
            tasks = [
                await (a, b)[i % 2].create_task(
                    TaskCreate(title=f"r{round_number}t{i}", prompt="p", codebase_id=shared.id)
                )
                for i in range(TASKS_PER_ROUND)
            ]
            all_task_ids.extend(t.id for t in tasks)
            # Each task is claimed by distinct workers through both replicas; the claims of one
            # task sit next to each other in the burst, so they reach the replicas together.
            stride = WORKER_COUNT // CLAIMANTS_PER_TASK
            claims = [
                (replicas[j % 2], task.id, workers[(t + j * stride) % WORKER_COUNT])
                for t, task in enumerate(tasks)
                for j in range(CLAIMANTS_PER_TASK)
            ]
            statuses = await _claim_burst(claims)
            for t, task in enumerate(tasks):
                mine = statuses[t * CLAIMANTS_PER_TASK : (t + 1) * CLAIMANTS_PER_TASK]
                assert sorted(mine) == [200] + [409] * (CLAIMANTS_PER_TASK - 1), (
                    f"round {round_number}, task {task.title}: statuses {mine}"
                )
                winner = claims[t * CLAIMANTS_PER_TASK + mine.index(200)][2]
                held = await (a, b)[t % 2].get_task(task.id)
                # The lease is short: on a slow machine the sweep may already have requeued it.
                assert (held.status, held.worker_id, held.attempts) in {
                    (TaskStatus.RUNNING, winner, 0),
                    (TaskStatus.PENDING, None, 1),
                }

        # No winner heartbeats: both replicas sweep, every task is requeued exactly once.
        async def none_running() -> bool:
            return not await b.list_tasks(TaskStatus.RUNNING)

        await eventually(none_running)
        await asyncio.sleep(0.5)  # more sweeps of both replicas
        attempts = [(await a.get_task(task_id)).attempts for task_id in all_task_ids]
        assert attempts == [1] * len(all_task_ids)
    finally:
        await a.aclose()
        await b.aclose()


async def test_postgres_keeps_everything_across_sigkill(
    processes: list[ServerProcess], tmp_path: Path, database_url: str
) -> None:
    env = {"DATABASE_URL": database_url, "A2A_LEASE_SECONDS": "2", "A2A_LEASE_SWEEP_INTERVAL": "0.2"}
    server = _start(processes, env, tmp_path)
    async with CodetetherClient(server.url) as client:
        await client.register_worker(WorkerRegistration(worker_id="pod-0", capabilities=["agent", "gpu"]))
        await client.register_worker(WorkerRegistration(worker_id="pod-1"))
        app = await client.register_codebase(CodebaseCreate(name="app", path="/c/app", worker_id="pod-0"))
        await client.register_codebase(
            CodebaseCreate(name="g", path="/c/g", worker_id="pod-1", codebase_id="global")
        )
        done = await client.create_task(TaskCreate(title="done", prompt="p", codebase_id=app.id))
        running = await client.create_task(TaskCreate(title="running", prompt="p", codebase_id=app.id))
        waiting = await client.create_task(TaskCreate(title="waiting", prompt="p", priority=3))
        await client.claim_task(done.id, "pod-0")
        await client.append_output(done.id, "pod-0", "some output\n")
        await client.update_task_status(
            done.id, TaskStatusUpdate(status=TaskStatus.COMPLETED, worker_id="pod-0", result="ok")
        )
        await client.claim_task(running.id, "pod-0")
        await client.sync_sessions(app.id, "pod-0", [SessionInfo(id="s1", title="Session one")])
        await client.sync_messages(app.id, "s1", "pod-0", [MessageSummary(id="m1", tool_usage={"edit": 1})])

    server.kill()  # SIGKILL: nothing is flushed on the way out
    server.start()

    async with CodetetherClient(server.url) as client:
        workers = {w.id: w for w in await client.list_workers()}
        assert set(workers) == {"pod-0", "pod-1"}
        assert (workers["pod-0"].tasks_completed, workers["pod-0"].capabilities) == (1, ["agent", "gpu"])
        assert workers["pod-1"].global_codebase_id == "global-pod-1"
        assert {c.id for c in await client.list_codebases()} == {app.id, "global-pod-1"}
        assert (await client.get_task(done.id)).result == "ok"
        assert (await client.get_output(done.id)).output == "some output\n"
        assert (await client.get_task(waiting.id)).status is TaskStatus.PENDING
        assert [s.title for s in await client.list_sessions(app.id)] == ["Session one"]
        assert [m.tool_usage for m in await client.list_messages(app.id, "s1")] == [{"edit": 1}]
        # pod-0 died with the server: its lease runs out (maybe already, on a slow machine) and the
        # restarted server requeues the task, once.
        survived = await client.get_task(running.id)
        assert (survived.status, survived.worker_id) in {
            (TaskStatus.RUNNING, "pod-0"),
            (TaskStatus.PENDING, None),
        }

        async def requeued() -> bool:
            return (await client.get_task(running.id)).status is TaskStatus.PENDING

        await eventually(requeued)
        assert (await client.get_task(running.id)).attempts == 1
        assert [t.title for t in await client.list_tasks(TaskStatus.PENDING, "pod-0")] == ["running"]
        assert [t.title for t in await client.list_tasks(TaskStatus.PENDING, "pod-1")] == ["waiting"]
