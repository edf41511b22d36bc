"""Cancelling tasks by request with real worker processes: running (event or lease check) and pending."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from codetether_contract.models import CodebaseCreate, TaskStatus
from tests.integration.worker.conftest import Harness, WorkerProcess, wait_until


@pytest.fixture
def server_env(server_env: dict[str, str]) -> dict[str, str]:
    # Leases long enough that a worker with a slow heartbeat keeps its task: in the reactive test
    # nothing but the event may stop the agent.
    return {**server_env, "A2A_LEASE_SECONDS": "300", "A2A_WORKER_OFFLINE_SECONDS": "600"}


def _logged(worker: WorkerProcess, text: str) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return text in worker.log()

    return probe


def _gone(pid: int) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        status = await asyncio.to_thread(Path(f"/proc/{pid}/status").read_text)
        return "\nState:\tZ" in status

    return probe


async def _metric(worker: WorkerProcess, name: str) -> float:
    return (await worker.metrics()).get(name, 0.0)


CANCELLED_METRIC = 'codetether_worker_tasks_completed_total{status="cancelled"}'


async def _start_cancel_and_check(harness: Harness, worker: WorkerProcess) -> Path:
    """Run a long task on ``worker``, cancel it, see its agent (and the agent's child) stop."""
    folder = harness.folder(f"{worker.name}-repo")
    codebase_id = await harness.codebase_id(f"{worker.name}-repo", worker_id=worker.name)
    assert folder == worker.codebases[f"{worker.name}-repo"]
    task = await harness.task("@child 300\n@sleep 300\n@append after.txt ran", codebase_id)
    await harness.running_on(task.id, worker.name)
    agent = await harness.agent_pid(task.id)
    child_pid_file = folder / "child.pid"
    await wait_until(lambda: asyncio.to_thread(child_pid_file.exists), what="the agent's child started")
    child = int(child_pid_file.read_text())

    cancelled = await harness.client.cancel_task(task.id)
    assert (cancelled.status, cancelled.error) == (TaskStatus.CANCELLED, "cancelled by request")

    await wait_until(_logged(worker, f"task {task.id} is no longer ours (it was cancelled by request)"))
    await wait_until(_gone(agent), what="the agent stopped")
    await wait_until(_gone(child), what="the agent's process group stopped")
    await wait_until(lambda: _metric(worker, CANCELLED_METRIC), what="the cancellation counted by the worker")
    after = await harness.client.get_task(task.id)
    assert (after.status, after.result, after.error) == (TaskStatus.CANCELLED, None, "cancelled by request")
    assert not (folder / "after.txt").exists()

    # The slot is free again: the next task runs and completes.
    follow_up = await harness.task("@append next.txt ran", codebase_id)
    [done] = await harness.finished([follow_up.id])
    assert done.status is TaskStatus.COMPLETED
    assert (folder / "next.txt").read_text() == "ran\n"
    assert await _metric(worker, 'codetether_worker_tasks_completed_total{status="abandoned"}') == 0
    assert await _metric(worker, 'codetether_worker_tasks_completed_total{status="handed_back"}') == 0
    return folder


async def test_cancel_reaches_a_reactive_worker_at_once(harness: Harness) -> None:
    # The lease check runs once a minute here: only the task.cancelled event can stop the agent
    # within the test's waits.
    worker = harness.fleet.worker(
        "w-reactive",
        reactive=True,
        codebases={"w-reactive-repo": harness.folder("w-reactive-repo")},
        extra_args=["--heartbeat-interval", "60"],
    )
    await worker.wait_ready()

    async def reactive() -> bool:
        return await worker.delivery_mode() == "reactive"

    await wait_until(reactive, what="reactive delivery")
    await _start_cancel_and_check(harness, worker)
    assert "task.cancelled event; checking it now" in worker.log()


async def test_cancel_reaches_a_polling_worker_at_its_lease_check(harness: Harness) -> None:
    worker = harness.fleet.worker(
        "w-polling", reactive=False, codebases={"w-polling-repo": harness.folder("w-polling-repo")}
    )
    await worker.wait_ready()
    assert await worker.delivery_mode() == "polling"
    await _start_cancel_and_check(harness, worker)
    assert "task.cancelled event" not in worker.log()


async def test_an_outcome_reported_after_the_cancel_is_dropped(harness: Harness) -> None:
    worker = harness.fleet.worker(
        "w-late", reactive=False, codebases={"w-late-repo": harness.folder("w-late-repo")}
    )
    await worker.wait_ready()
    codebase_id = await harness.codebase_id("w-late-repo", worker_id="w-late")
    # Long enough that the worker is paused before the agent ends (its pid arrives with its output).
    task = await harness.task("@sleep 3\n@append done.txt ran", codebase_id)
    await harness.running_on(task.id, "w-late")
    agent = await harness.agent_pid(task.id)

    # The agent finishes while its worker is paused; the cancel lands before the worker reports.
    worker.signal(signal.SIGSTOP)
    try:
        await wait_until(_gone(agent), what="the agent finished")
        await harness.client.cancel_task(task.id)
    finally:
        worker.signal(signal.SIGCONT)

    await wait_until(lambda: _metric(worker, CANCELLED_METRIC), what="the late outcome counted as cancelled")
    after = await harness.client.get_task(task.id)
    assert (after.status, after.result, after.error) == (TaskStatus.CANCELLED, None, "cancelled by request")
    assert await _metric(worker, 'codetether_worker_tasks_completed_total{status="completed"}') == 0
    assert "was no longer ours when reporting" not in worker.log()
    assert (harness.folder("w-late-repo") / "done.txt").read_text() == "ran\n"  # it did finish


async def test_a_cancelled_pending_task_is_never_run(harness: Harness) -> None:
    folder = harness.folder("later-repo")
    # Registered for a worker that has not started yet: the task waits for it.
    codebase = await harness.client.register_codebase(
        CodebaseCreate(name="later-repo", path=str(folder), worker_id="w-later")
    )
    doomed = await harness.task("@append doomed.txt ran", codebase.id)
    cancelled = await harness.client.cancel_task(doomed.id)
    assert (cancelled.status, cancelled.worker_id) == (TaskStatus.CANCELLED, None)

    worker = harness.fleet.worker("w-later", codebases={"later-repo": folder})
    await worker.wait_ready()
    assert await harness.codebase_id("later-repo", worker_id="w-later") == codebase.id
    kept = await harness.task("@append kept.txt ran", codebase.id)
    [done] = await harness.finished([kept.id])
    assert done.status is TaskStatus.COMPLETED
    assert not (folder / "doomed.txt").exists()
    assert (await harness.client.get_task(doomed.id)).status is TaskStatus.CANCELLED
    assert await _metric(worker, "codetether_worker_tasks_claimed_total") == 1
