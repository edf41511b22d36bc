"""Worker life: SIGTERM drain, SIGKILL and lease expiry, a server restart, bad configuration."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from codetether_contract.models import CodebaseCreate, TaskStatus
from tests.integration.worker.conftest import Harness, WorkerProcess, wait_until


async def _shared_codebase(harness: Harness, name: str) -> tuple[str, Path]:
    """A codebase without a worker: any worker may run its tasks (the folder is shared here)."""
    folder = harness.folder(name)
    codebase = await harness.client.register_codebase(CodebaseCreate(name=name, path=str(folder)))
    return codebase.id, folder


async def test_sigterm_drains_then_hands_back(harness: Harness) -> None:
    w1 = harness.fleet.worker("w-drain", max_concurrent_tasks=2, drain_timeout=4)
    await w1.wait_ready()
    codebase_id, folder = await _shared_codebase(harness, "shared")

    short = await harness.task("@sleep 2\n@append short.txt finished", codebase_id, title="short")
    long = await harness.task("@sleep 120 on w-drain\n@append long.txt finished", codebase_id, title="long")
    await harness.running_on(short.id, "w-drain")
    await harness.running_on(long.id, "w-drain")

    w1.signal(signal.SIGTERM)
    # Stopped claiming at once: a task created now waits for another worker.
    await asyncio.sleep(0.3)
    queued = await harness.task("@append queued.txt finished", codebase_id, title="queued")
    exit_code = await asyncio.to_thread(w1.wait_exit, 60)
    assert exit_code == 0, w1.log()[-3000:]

    short_done = await harness.client.get_task(short.id)
    assert short_done.status is TaskStatus.COMPLETED and short_done.worker_id == "w-drain"
    handed_back = await harness.client.get_task(long.id)
    assert handed_back.status is TaskStatus.PENDING
    assert handed_back.attempts == 0  # a hand-back is not a failed attempt
    assert (await harness.client.get_task(queued.id)).status is TaskStatus.PENDING
    assert "w-drain" not in [w.id for w in await harness.client.list_workers()]

    w2 = harness.fleet.worker("w-after")
    await w2.wait_ready()
    done = {t.id: t for t in await harness.finished([long.id, queued.id])}
    assert {t.worker_id for t in done.values()} == {"w-after"}
    assert all(t.status is TaskStatus.COMPLETED for t in done.values())
    assert (folder / "short.txt").read_text() == "finished\n"
    assert (folder / "long.txt").read_text() == "finished\n"


async def test_second_sigterm_hands_back_at_once(harness: Harness) -> None:
    worker = harness.fleet.worker("w-impatient", drain_timeout=300)
    await worker.wait_ready()
    codebase_id, _ = await _shared_codebase(harness, "shared")
    task = await harness.task("@sleep 300", codebase_id)
    await harness.running_on(task.id, "w-impatient")

    worker.signal(signal.SIGTERM)
    await wait_until(_logged(worker, "draining: waiting up to 300s"), what="drain started")
    worker.signal(signal.SIGTERM)
    assert await asyncio.to_thread(worker.wait_exit, 60) == 0
    handed_back = await harness.client.get_task(task.id)
    assert handed_back.status is TaskStatus.PENDING and handed_back.attempts == 0


def _logged(worker: WorkerProcess, text: str) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return text in worker.log()

    return probe


async def test_sigkill_mid_task_completes_elsewhere_exactly_once(harness: Harness) -> None:
    w1 = harness.fleet.worker("w-doomed")
    await w1.wait_ready()
    codebase_id, folder = await _shared_codebase(harness, "shared")

    task = await harness.task("@sleep 120 on w-doomed\n@append once.txt ran", codebase_id)
    await harness.running_on(task.id, "w-doomed")
    orphan = await harness.agent_pid(task.id)

    w1.kill()  # SIGKILL: no drain, no hand-back, no unregister
    os.killpg(orphan, signal.SIGKILL)  # what losing the node does to its agent too
    w2 = harness.fleet.worker("w-survivor")
    await w2.wait_ready()

    [done] = await harness.finished([task.id], within=60)
    assert done.status is TaskStatus.COMPLETED
    assert done.worker_id == "w-survivor"
    assert done.attempts == 1  # one lease expired
    assert (folder / "once.txt").read_text() == "ran\n"
    assert (await w2.metrics())["codetether_worker_tasks_claimed_total"] == 1


def _run_worker(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    return subprocess.run(
        [sys.executable, "-m", "codetether_worker", *argv],
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        timeout=60,
    )


def test_bad_configuration_exits_2_naming_the_problem(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"server_url": "http://127.0.0.1:9", "poll_interval": 5,}')
    missing_path = tmp_path / "missing-path.json"
    missing_path.write_text(
        json.dumps({"server_url": "http://127.0.0.1:9", "codebases": [{"name": "p", "path": "/nope/p"}]})
    )
    cases = {
        "invalid JSON at line 1": _run_worker("--config", str(broken)),
        "path /nope/p of codebase 'p' does not exist": _run_worker("--config", str(missing_path)),
        "server_url is required": _run_worker(),
        "is not of the form name:path": _run_worker("--server", "http://x", "--codebase", "oops"),
        "poll_interval (A2A_POLL_INTERVAL): expected a number": _run_worker(
            "--server", "http://x", env={"A2A_POLL_INTERVAL": "fast"}
        ),
    }
    for needle, done in cases.items():
        assert done.returncode == 2, (needle, done.stderr)
        [line] = done.stderr.strip().splitlines()
        assert needle in line


async def test_a_worker_that_lost_its_lease_stops_its_agent(harness: Harness) -> None:
    # A worker paused (or cut off) past its lease: the task runs elsewhere; when the worker comes
    # back it must stop its own copy instead of running the task twice.
    paused = harness.fleet.worker("w-paused")
    await paused.wait_ready()
    codebase_id, folder = await _shared_codebase(harness, "shared")
    task = await harness.task("@sleep 300 on w-paused\n@append runs.txt ran", codebase_id)
    await harness.running_on(task.id, "w-paused")
    agent = await harness.agent_pid(task.id)

    paused.signal(signal.SIGSTOP)
    other = harness.fleet.worker("w-other")
    await other.wait_ready()
    [done] = await harness.finished([task.id], within=60)
    assert done.worker_id == "w-other" and done.status is TaskStatus.COMPLETED
    paused.signal(signal.SIGCONT)

    await wait_until(_logged(paused, f"task {task.id} is no longer ours"), what="lost lease noticed")
    await wait_until(_gone(agent), what="its agent stopped")
    assert (folder / "runs.txt").read_text() == "ran\n"
    assert (await harness.client.get_task(task.id)).worker_id == "w-other"
    assert (await paused.metrics())['codetether_worker_tasks_completed_total{status="abandoned"}'] == 1


def _gone(pid: int) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        status = await asyncio.to_thread(Path(f"/proc/{pid}/status").read_text)
        return "\nState:\tZ" in status

    return probe


async def test_two_workers_sharing_a_health_port_both_work(harness: Harness) -> None:
    first = harness.fleet.worker("w-port-1")
    await first.wait_ready()
    second = harness.fleet.worker("w-port-2", extra_args=["--health-port", str(first.health_port)])
    await wait_until(_logged(second, "cannot listen on health port"), what="the port clash reported")

    async def both_registered() -> bool:
        return {w.id for w in await harness.client.list_workers()} == {"w-port-1", "w-port-2"}

    await wait_until(both_registered, what="both workers registered")
    assert second.alive()
