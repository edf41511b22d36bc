"""How tasks reach workers: Redis events, polling, the fallback between them, and routing."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from codetether_contract.models import CodebaseCreate, TaskStatus
from tests.integration.worker.conftest import Harness, WorkerProcess, wait_until
from tests.support.services import RedisServer


async def test_reactive_delivery_runs_the_agent_and_reports(harness: Harness) -> None:
    api = harness.folder("api")
    # Polling every 60 s: only an event can bring a task created after start-up in time.
    worker = harness.fleet.worker("w-reactive", codebases={"api": api}, poll_interval=60)
    await worker.wait_ready()
    await wait_until(lambda: _mode_is(worker, "reactive"), what="reactive mode")
    codebase_id = await harness.codebase_id("api", "w-reactive")

    task = await harness.task("Write the greeting\n@write hello.txt hello\n@lines 2", codebase_id)
    [done] = await harness.finished([task.id], within=20)

    assert done.status is TaskStatus.COMPLETED, done.error
    assert done.worker_id == "w-reactive"
    assert done.result == "Wrote hello.txt"
    assert done.session_id and done.session_id.startswith("ses_")
    assert (api / "hello.txt").read_text() == "hello\n"
    output = (await harness.client.get_output(task.id)).output
    assert "line 1\nline 2\n" in output
    samples = await worker.metrics()
    assert samples["codetether_worker_tasks_claimed_total"] == 1
    assert samples['codetether_worker_tasks_completed_total{status="completed"}'] == 1
    assert samples["codetether_worker_dispatch_latency_seconds_count"] == 1
    assert samples["codetether_worker_task_duration_seconds_count"] == 1


async def _mode_is(worker: WorkerProcess, mode: str) -> bool:
    return await worker.delivery_mode() == mode


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A Redis of this test only, on a fixed port, so it can be stopped and started again."""
    redis = RedisServer().start()
    try:
        yield redis
    finally:
        redis.stop()


@pytest.fixture
def server_env(request: pytest.FixtureRequest, redis_base_url: str, redis_prefix: str) -> dict[str, str]:
    if request.node.name == "test_a_redis_the_server_does_not_publish_to_is_noticed":
        return {"A2A_REDIS_PREFIX": redis_prefix}  # no A2A_REDIS_URL: this server publishes nothing
    if "own_redis" in request.fixturenames:
        redis: RedisServer = request.getfixturevalue("own_redis")
        return {"A2A_REDIS_URL": redis.url, "A2A_REDIS_PREFIX": redis_prefix}
    return {"A2A_REDIS_URL": redis_base_url, "A2A_REDIS_PREFIX": redis_prefix}


async def test_polling_fallback_while_redis_is_down(harness: Harness, own_redis: RedisServer) -> None:
    repo = harness.folder("repo")
    worker = harness.fleet.worker("w-fallback", codebases={"repo": repo}, poll_interval=0.5)
    await worker.wait_ready()
    await wait_until(lambda: _mode_is(worker, "reactive"), what="reactive mode")
    codebase_id = await harness.codebase_id("repo")

    first = await harness.task("@append log.txt one", codebase_id)
    await harness.finished([first.id])

    own_redis.stop()
    await wait_until(lambda: _mode_is(worker, "polling"), what="fallback to polling")
    second = await harness.task("@append log.txt two", codebase_id)
    [done] = await harness.finished([second.id])
    assert done.status is TaskStatus.COMPLETED and done.worker_id == "w-fallback"

    own_redis.start()  # same port
    await wait_until(lambda: _mode_is(worker, "reactive"), what="back to reactive", within=30)
    third = await harness.task("@append log.txt three", codebase_id)
    await harness.finished([third.id])

    assert (repo / "log.txt").read_text() == "one\ntwo\nthree\n"
    samples = await worker.metrics()
    assert samples["codetether_worker_redis_connects_total"] >= 2
    assert samples['codetether_worker_tasks_completed_total{status="completed"}'] == 3


@pytest.mark.parametrize("reactive", [True, False], ids=["reactive", "polling"])
async def test_affinity_pinned_codebases_only_run_on_their_worker(harness: Harness, reactive: bool) -> None:
    one, two = harness.folder("one"), harness.folder("two")
    w1 = harness.fleet.worker("w1", reactive=reactive, codebases={"proj-one": one}, max_concurrent_tasks=2)
    w2 = harness.fleet.worker("w2", reactive=reactive, codebases={"proj-two": two}, max_concurrent_tasks=2)
    await w1.wait_ready()
    await w2.wait_ready()
    one_id = await harness.codebase_id("proj-one", "w1")
    two_id = await harness.codebase_id("proj-two", "w2")

    tasks = []
    for number in range(5):
        tasks.append(await harness.task(f"@append ran.txt {number}", one_id))
        tasks.append(await harness.task(f"@append ran.txt {number}", two_id))
    done = await harness.finished([t.id for t in tasks])

    assert all(t.status is TaskStatus.COMPLETED for t in done), [t.error for t in done]
    for task in done:
        assert task.worker_id == ("w1" if task.codebase_id == one_id else "w2")
    assert sorted((one / "ran.txt").read_text().split()) == ["0", "1", "2", "3", "4"]
    assert sorted((two / "ran.txt").read_text().split()) == ["0", "1", "2", "3", "4"]


async def test_global_tasks_go_to_workers_with_a_global_codebase(harness: Harness) -> None:
    shared = harness.folder("global")
    with_global = harness.fleet.worker("w-global", global_codebase=shared, max_concurrent_tasks=2)
    without = harness.fleet.worker("w-plain", max_concurrent_tasks=2)
    await with_global.wait_ready()
    await without.wait_ready()

    tasks = [await harness.task(f"@append global.txt {n}", "global") for n in range(4)]
    done = await harness.finished([t.id for t in tasks])

    assert {t.worker_id for t in done} == {"w-global"}
    assert all(t.status is TaskStatus.COMPLETED for t in done)
    assert len((shared / "global.txt").read_text().split()) == 4
    assert (await without.metrics())["codetether_worker_tasks_claimed_total"] == 0


@pytest.mark.parametrize("reactive", [True, False], ids=["reactive", "polling"])
async def test_learns_an_assigned_codebase_and_clones_it(harness: Harness, reactive: bool) -> None:
    source = make_git_repo(harness.folder("source-repo"))
    worker = harness.fleet.worker("pod-0", reactive=reactive)
    await worker.wait_ready()

    # What the operator does: register a codebase for the pod; the folder does not exist yet.
    target = harness.root / "codebases" / "app"
    codebase = await harness.client.register_codebase(
        CodebaseCreate(name="app", path=str(target), worker_id="pod-0", git_url=str(source))
    )

    await wait_until(lambda: _exists(target / "README.md"), what="clone of the git source")
    task = await harness.task("@append README.md edited by the agent", codebase.id)
    [done] = await harness.finished([task.id])
    assert done.status is TaskStatus.COMPLETED and done.worker_id == "pod-0"
    assert (target / "README.md").read_text() == "from git\nedited by the agent\n"
    assert worker.alive()


async def _exists(path: Path) -> bool:
    return await asyncio.to_thread(path.exists)


def make_git_repo(source: Path) -> Path:
    subprocess.run(["git", "init", "-q", "-b", "main", str(source)], check=True)
    (source / "README.md").write_text("from git\n")
    subprocess.run(["git", "-C", str(source), "add", "."], check=True)
    subprocess.run(
        ["git", "-C", str(source), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init"],
        check=True,
    )
    return source


async def test_a_task_it_may_not_run_is_never_claimed(harness: Harness) -> None:
    worker = harness.fleet.worker("w-caps", codebases={"c": harness.folder("c")})
    await worker.wait_ready()
    codebase_id = await harness.codebase_id("c")
    gpu_task = await harness.task("@echo needs gpu", codebase_id, metadata={"required_capabilities": ["gpu"]})
    plain = await harness.task("@echo plain", codebase_id)
    await harness.finished([plain.id])
    assert (await harness.client.get_task(gpu_task.id)).status is TaskStatus.PENDING


async def test_a_redis_the_server_does_not_publish_to_is_noticed(
    harness: Harness, redis_base_url: str
) -> None:
    # The seed's default redis_url points at a local Redis; if the server publishes elsewhere (or
    # not at all) the worker looks reactive but hears nothing. It must notice and poll.
    folder = harness.folder("quiet")
    worker = harness.fleet.worker(
        "w-deaf", codebases={"q": folder}, redis_url=redis_base_url, poll_interval=0.5
    )
    await worker.wait_ready()
    await wait_until(lambda: _mode_is(worker, "reactive"), what="connected to Redis")
    codebase_id = await harness.codebase_id("q")
    busy = await harness.task("@sleep 6", codebase_id)
    waiting = await harness.task("@echo found by polling", codebase_id)
    done = await harness.finished([busy.id, waiting.id])
    assert all(t.status is TaskStatus.COMPLETED for t in done)
    assert "Redis events are not arriving" in worker.log()


async def test_many_workers_run_every_task_exactly_once(harness: Harness) -> None:
    workers = [harness.fleet.worker(f"w-many-{n}", max_concurrent_tasks=2) for n in range(3)]
    for worker in workers:
        await worker.wait_ready()
    folder = harness.folder("many")
    codebase = await harness.client.register_codebase(CodebaseCreate(name="many", path=str(folder)))

    tasks = [await harness.task(f"@append runs.txt {n}", codebase.id) for n in range(30)]
    done = await harness.finished([t.id for t in tasks])

    assert all(t.status is TaskStatus.COMPLETED and t.attempts == 0 for t in done)
    runs = (folder / "runs.txt").read_text().split()
    assert sorted(runs, key=int) == [str(n) for n in range(30)]  # each once: no task ran twice
    claimed = [(await w.metrics())["codetether_worker_tasks_claimed_total"] for w in workers]
    assert sum(claimed) == 30
