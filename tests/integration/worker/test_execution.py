"""Running tasks: the concurrency limit, timeouts, agent failures, session sync, health."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from codetether_contract.models import Task, TaskStatus
from tests.integration.worker.conftest import Harness, wait_until


def max_overlap(tasks: list[Task]) -> int:
    """The most tasks that were running at the same moment, from claim and completion times."""
    edges: list[tuple[float, int]] = []
    for task in tasks:
        assert task.started_at is not None and task.completed_at is not None
        edges.append((task.started_at.timestamp(), 1))
        edges.append((task.completed_at.timestamp(), -1))
    running = peak = 0
    for _, step in sorted(edges, key=lambda edge: (edge[0], edge[1])):  # ends before starts at a tie
        running += step
        peak = max(peak, running)
    return peak


async def test_concurrency_limit(harness: Harness) -> None:
    folder = harness.folder("busy")
    worker = harness.fleet.worker("w-limit", codebases={"busy": folder}, max_concurrent_tasks=2)
    await worker.wait_ready()
    codebase_id = await harness.codebase_id("busy")

    tasks = [await harness.task(f"@sleep 1\n@append done.txt {n}", codebase_id) for n in range(5)]

    async def sample_running() -> int:
        peak = 0
        while True:
            listed = await harness.client.list_tasks(TaskStatus.RUNNING)
            peak = max(peak, len(listed))
            if all([(await harness.client.get_task(t.id)).status.is_final for t in tasks]):
                return peak
            await asyncio.sleep(0.1)

    observed_peak = await asyncio.wait_for(sample_running(), 60)
    done = await harness.finished([t.id for t in tasks])

    assert all(t.status is TaskStatus.COMPLETED for t in done)
    assert observed_peak <= 2
    assert max_overlap(done) == 2  # the limit is used, and never exceeded
    assert len((folder / "done.txt").read_text().split()) == 5


async def test_timeout_kills_the_agent_and_fails_the_task(harness: Harness) -> None:
    folder = harness.folder("slow")
    worker = harness.fleet.worker("w-timeout", codebases={"slow": folder}, task_timeout=1.5)
    await worker.wait_ready()
    codebase_id = await harness.codebase_id("slow")

    task = await harness.task("@child 300\n@sleep 300", codebase_id)
    [done] = await harness.finished([task.id])

    assert done.status is TaskStatus.FAILED
    assert done.error == "agent timed out after 1.5s; its process group was killed"
    child = int((folder / "child.pid").read_text())
    await wait_until(lambda: _gone(child), what="the agent's child process killed")
    # The worker goes on with the next task.
    after = await harness.task("@echo still here", codebase_id)
    [next_done] = await harness.finished([after.id])
    assert next_done.result == "still here"


async def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    status = Path(f"/proc/{pid}/status")
    return "\nState:\tZ" in await asyncio.to_thread(status.read_text)


async def test_agent_failure_reports_stderr(harness: Harness) -> None:
    worker = harness.fleet.worker("w-fail", codebases={"f": harness.folder("f")})
    await worker.wait_ready()
    codebase_id = await harness.codebase_id("f")

    failing = await harness.task("@fail compilation error in main.c", codebase_id)
    fine = await harness.task("@echo ok", codebase_id)
    done = {t.id: t for t in await harness.finished([failing.id, fine.id])}

    assert done[failing.id].status is TaskStatus.FAILED
    assert done[failing.id].error == "agent exited with status 1: compilation error in main.c"
    assert "compilation error in main.c" in (await harness.client.get_output(failing.id)).output
    assert done[fine.id].status is TaskStatus.COMPLETED
    samples = await worker.metrics()
    assert samples['codetether_worker_tasks_completed_total{status="failed"}'] == 1
    assert samples['codetether_worker_tasks_completed_total{status="completed"}'] == 1


async def test_sessions_are_synced_per_codebase(harness: Harness) -> None:
    folder = harness.folder("sessions")
    worker = harness.fleet.worker("w-sessions", codebases={"s": folder})
    await worker.wait_ready()
    codebase_id = await harness.codebase_id("s")

    task = await harness.task("Document it\n@write DOCS.md docs\n@append DOCS.md more", codebase_id)
    [done] = await harness.finished([task.id])
    assert done.session_id is not None

    async def synced() -> bool:
        sessions = await harness.client.list_sessions(codebase_id)
        return any(s.id == done.session_id and s.message_count == 2 for s in sessions)

    await wait_until(synced, what="session synced")
    [session] = [s for s in await harness.client.list_sessions(codebase_id) if s.id == done.session_id]
    assert session.title == "Document it"
    assert session.task_id == task.id
    assert session.worker_id == "w-sessions"
    messages = await harness.client.list_messages(codebase_id, session.id)
    assert [m.role for m in messages] == ["user", "assistant"]
    assert messages[1].tool_usage == {"write": 1, "append": 1}
    assert messages[1].summary == "Wrote DOCS.md Appended to DOCS.md"


async def test_readiness_follows_the_server(harness: Harness) -> None:
    worker = harness.fleet.worker("w-ready")
    await worker.wait_ready()
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{worker.health_url}/healthz")).status_code == 200
        harness.server.kill()
        await wait_until(_not(worker.readyz), what="not ready without a server")
        assert (await client.get(f"{worker.health_url}/healthz")).status_code == 200  # alive all the same
        await asyncio.to_thread(harness.server.start)
        await worker.wait_ready()  # in-memory server forgot it: the worker registered again
        workers = await harness.client.list_workers()
        assert [w.id for w in workers] == ["w-ready"]


def _not(probe: Callable[[], Awaitable[bool]]) -> Callable[[], Awaitable[bool]]:
    async def negated() -> bool:
        return not await probe()

    return negated


async def test_a_task_can_continue_a_session(harness: Harness) -> None:
    folder = harness.folder("cont")
    worker = harness.fleet.worker("w-continue", codebases={"c": folder})
    await worker.wait_ready()
    codebase_id = await harness.codebase_id("c")

    first = await harness.task("Start\n@echo one", codebase_id)
    [first_done] = await harness.finished([first.id])
    second = await harness.task("@echo two", codebase_id, metadata={"session_id": first_done.session_id})
    [second_done] = await harness.finished([second.id])
    assert second_done.session_id == first_done.session_id

    async def four_messages() -> bool:
        sessions = await harness.client.list_sessions(codebase_id)
        return any(s.id == first_done.session_id and s.message_count == 4 for s in sessions)

    await wait_until(four_messages, what="the continued session synced with 4 messages")
