"""The wire contract, served by every storage backend (memory, Redis, PostgreSQL) with the same answers."""

from __future__ import annotations

import asyncio

import pytest

from codetether_contract.client import (
    ConflictError,
    NotFoundError,
)
from codetether_contract.models import (
    MessageSummary,
    ReleaseRequest,
    SessionInfo,
    TaskCreate,
    TaskStatus,
    TaskStatusUpdate,
    WorkerStatus,
)
from tests.integration.server.conftest import Api, Serve
from tests.integration.server.helpers import eventually


async def test_workers_register_idempotently_and_show_the_monitoring_shape(api: Api) -> None:
    await api.worker("w1", name="dev-vm-worker", capabilities=["agent", "build"], hostname="vm1")
    await api.worker("w1", name="dev-vm-worker", capabilities=["agent", "build", "test"], hostname="vm1")
    await api.codebase("one", worker_id="w1")
    await api.codebase("two", worker_id="w1")
    await api.codebase("shared-tasks", worker_id="w1", codebase_id="global")

    answer = (await api.http.get("/v1/agent/workers")).json()
    assert [w["id"] for w in answer["workers"]] == ["w1"]
    worker = answer["workers"][0]
    assert worker["name"] == "dev-vm-worker"
    assert worker["status"] == "active"
    assert worker["codebases"] == 3
    assert worker["tasks_completed"] == 0
    assert worker["capabilities"] == ["agent", "build", "test"]
    assert worker["global_codebase_id"] == "global-w1"
    assert "last_heartbeat" in worker


async def test_heartbeat_and_unregister_of_an_unknown_worker_are_404(api: Api) -> None:
    with pytest.raises(NotFoundError):
        await api.client.heartbeat("ghost")
    with pytest.raises(NotFoundError):
        await api.client.unregister_worker("ghost")
    await api.worker("w1")
    await api.client.heartbeat("w1", status=WorkerStatus.BUSY, active_tasks=1)
    [worker] = await api.client.list_workers()
    assert (worker.status, worker.active_tasks) == (WorkerStatus.BUSY, 1)
    await api.client.unregister_worker("w1")
    assert await api.client.list_workers() == []
    with pytest.raises(NotFoundError):
        await api.client.heartbeat("w1")


async def test_codebase_without_worker_and_no_worker_registered_is_400_no_workers_available(api: Api) -> None:
    response = await api.http.post("/v1/agent/codebases", json={"name": "p", "path": "/home/user/p"})
    assert response.status_code == 400
    assert response.json()["detail"].startswith("No workers available")
    assert "worker" in response.json()["detail"].lower()

    await api.worker("w1")
    shared = await api.codebase("p")
    assert (await api.client.get_codebase(shared)).worker_id is None


async def test_codebase_registration_is_an_upsert(api: Api) -> None:
    first = await api.codebase("proj", worker_id="w1")
    assert await api.codebase("proj", worker_id="w1") == first  # same (name, worker): same codebase
    assert await api.codebase("proj", worker_id="w2") != first

    chosen = await api.codebase("ns.proj", worker_id="w1", codebase_id="ns.proj")
    assert chosen == "ns.proj"
    moved = await api.codebase("ns.proj", worker_id="w2", codebase_id="ns.proj")
    assert moved == "ns.proj"
    assert (await api.client.get_codebase("ns.proj")).worker_id == "w2"

    assert await api.codebase("g", worker_id="w1", codebase_id="global") == "global-w1"
    assert {c.id for c in await api.client.list_codebases(worker_id="w1")} == {first, "global-w1"}
    assert len(await api.client.list_codebases()) == 4

    response = await api.http.post(
        "/v1/agent/codebases", json={"name": "g", "path": "/g", "codebase_id": "global"}
    )
    assert response.status_code == 400
    assert "worker_id" in response.json()["detail"]


async def test_codebase_get_and_delete_and_unknown_ids(api: Api) -> None:
    codebase_id = await api.codebase("proj", worker_id="w1")
    assert (await api.client.get_codebase(codebase_id)).name == "proj"
    await api.client.delete_codebase(codebase_id)
    with pytest.raises(NotFoundError):
        await api.client.get_codebase(codebase_id)
    with pytest.raises(NotFoundError):
        await api.client.delete_codebase(codebase_id)
    for path in ("/v1/agent/tasks/nope", "/v1/agent/tasks/nope/output", "/v1/agent/codebases/nope/sessions"):
        response = await api.http.get(path)
        assert response.status_code == 404, path
        assert "nope" in response.json()["detail"]


async def test_a_task_needs_a_registered_codebase_or_global(api: Api) -> None:
    with pytest.raises(NotFoundError, match="codebase_id"):
        await api.client.create_task(TaskCreate(title="t", prompt="p", codebase_id="unknown"))
    task = await api.client.create_task(TaskCreate(title="t", prompt="p"))
    assert (task.status, task.codebase_id, task.agent_type, task.attempts) == (
        TaskStatus.PENDING,
        "global",
        "build",
        0,
    )
    assert task.max_attempts == api.settings.max_attempts


async def test_workers_are_told_only_about_tasks_they_may_run(api: Api) -> None:
    await api.worker("w1", capabilities=["agent", "build"])
    await api.worker("w2", capabilities=["agent", "build", "gpu"])
    await api.codebase("g1", worker_id="w1", codebase_id="global")
    mine = await api.codebase("mine", worker_id="w1")
    theirs = await api.codebase("theirs", worker_id="w2")
    shared = await api.codebase("shared")

    def create(codebase_id: str, title: str, priority: int = 0, caps: list[str] | None = None) -> TaskCreate:
        metadata = {"required_capabilities": caps} if caps else {}
        return TaskCreate(
            title=title, prompt="p", codebase_id=codebase_id, priority=priority, metadata=metadata
        )

    for body in (
        create(mine, "pinned-to-w1"),
        create(theirs, "pinned-to-w2"),
        create("global", "global", priority=5),
        create(shared, "shared-low", priority=-1),
        create(shared, "shared-gpu", caps=["gpu"]),
        create(shared, "shared-urgent", priority=10),
    ):
        await api.client.create_task(body)

    w1 = [t.title for t in await api.client.list_tasks(TaskStatus.PENDING, "w1")]
    w2 = [t.title for t in await api.client.list_tasks(TaskStatus.PENDING, "w2")]
    assert w1 == ["shared-urgent", "global", "pinned-to-w1", "shared-low"]
    assert w2 == ["shared-urgent", "pinned-to-w2", "shared-gpu", "shared-low"]
    assert len(await api.client.list_tasks(TaskStatus.PENDING)) == 6
    with pytest.raises(NotFoundError):
        await api.client.list_tasks(TaskStatus.PENDING, "ghost")


async def test_task_lists_are_in_queue_order_and_limited(api: Api) -> None:
    await api.worker("w1")
    shared = await api.codebase("shared")
    priorities = [0, 5, -3, 5, 9, 0, 1, -3, 9, 2]
    for i, priority in enumerate(priorities):
        await api.client.create_task(
            TaskCreate(title=f"t{i}", prompt="p", codebase_id=shared, priority=priority)
        )
    expected = [f"t{i}" for i, _ in sorted(enumerate(priorities), key=lambda e: (-e[1], e[0]))]
    for params in ({"status": "pending"}, {"status": "pending", "worker_id": "w1"}, {}):
        answer = await api.http.get("/v1/agent/tasks", params={**params, "limit": 4})
        assert [t["title"] for t in answer.json()["tasks"]] == expected[:4], params
    assert (await api.http.get("/v1/agent/tasks", params={"limit": 0})).status_code == 422


async def test_claim_rules(api: Api) -> None:
    await api.worker("w1", capabilities=["agent"])
    await api.worker("w2", capabilities=["agent"])
    mine = await api.codebase("mine", worker_id="w1")
    task = await api.client.create_task(TaskCreate(title="t", prompt="p", codebase_id=mine))
    gpu = await api.client.create_task(
        TaskCreate(title="t", prompt="p", codebase_id=mine, metadata={"required_capabilities": ["gpu"]})
    )
    glob = await api.client.create_task(TaskCreate(title="t", prompt="p"))

    with pytest.raises(ConflictError, match="assigned to worker w1"):
        await api.client.claim_task(task.id, "w2")
    with pytest.raises(ConflictError, match="gpu"):
        await api.client.claim_task(gpu.id, "w1")
    with pytest.raises(ConflictError, match="global"):
        await api.client.claim_task(glob.id, "w1")
    with pytest.raises(NotFoundError):
        await api.client.claim_task("nope", "w1")
    with pytest.raises(NotFoundError):
        await api.client.claim_task(task.id, "ghost")

    first = await api.client.claim_task(task.id, "w1")
    assert first.task.status is TaskStatus.RUNNING
    assert first.task.worker_id == "w1"
    assert first.lease_expires_at > first.task.created_at
    again = await api.client.claim_task(task.id, "w1")  # the holder renews
    assert again.lease_expires_at >= first.lease_expires_at

    response = await api.http.post("/v1/worker/tasks/claim", json={"task_id": task.id})
    assert response.status_code == 422
    assert "X-Worker-ID" in response.text


async def test_only_the_holder_finishes_a_task_and_completion_counts(api: Api) -> None:
    await api.worker("w1")
    await api.worker("w2")
    shared = await api.codebase("shared")
    task = await api.client.create_task(TaskCreate(title="t", prompt="p", codebase_id=shared))
    done = TaskStatusUpdate(status=TaskStatus.COMPLETED, worker_id="w1", result="all good", session_id="s1")
    with pytest.raises(ConflictError, match="pending"):
        await api.client.update_task_status(task.id, done)
    await api.client.claim_task(task.id, "w1")
    with pytest.raises(ConflictError):
        await api.client.claim_task(task.id, "w2")
    with pytest.raises(ConflictError):
        await api.client.update_task_status(
            task.id, TaskStatusUpdate(status=TaskStatus.FAILED, worker_id="w2", error="no")
        )
    finished = await api.client.update_task_status(task.id, done)
    assert (finished.status, finished.result, finished.session_id) == (TaskStatus.COMPLETED, "all good", "s1")
    assert finished.completed_at is not None and finished.lease_expires_at is None
    assert (await api.client.update_task_status(task.id, done)).status is TaskStatus.COMPLETED  # idempotent
    with pytest.raises(ConflictError):
        await api.client.claim_task(task.id, "w1")
    workers = {w.id: w for w in await api.client.list_workers()}
    assert (workers["w1"].tasks_completed, workers["w2"].tasks_completed) == (1, 0)
    with pytest.raises(NotFoundError):
        await api.client.update_task_status("nope", done)


async def test_claim_by_setting_running_as_older_workers_do(api: Api) -> None:
    await api.worker("w1")
    task = await api.client.create_task(
        TaskCreate(title="t", prompt="p", codebase_id=await api.codebase("c"))
    )
    running = await api.client.update_task_status(
        task.id, TaskStatusUpdate(status=TaskStatus.RUNNING, worker_id="w1", session_id="sess")
    )
    assert (running.status, running.worker_id, running.session_id) == (TaskStatus.RUNNING, "w1", "sess")
    assert running.lease_expires_at is not None


async def test_release_hands_back_or_records_the_outcome(api: Api) -> None:
    await api.worker("w1")
    shared = await api.codebase("shared")
    task = await api.client.create_task(TaskCreate(title="t", prompt="p", codebase_id=shared))
    await api.client.claim_task(task.id, "w1")
    await api.client.release_task(ReleaseRequest(task_id=task.id, status=TaskStatus.PENDING), "w1")
    back = await api.client.get_task(task.id)
    assert (back.status, back.worker_id, back.attempts) == (TaskStatus.PENDING, None, 0)

    with pytest.raises(ConflictError):
        await api.client.release_task(ReleaseRequest(task_id=task.id, status=TaskStatus.PENDING), "w1")
    await api.client.claim_task(task.id, "w1")
    await api.client.release_task(
        ReleaseRequest(task_id=task.id, status=TaskStatus.FAILED, error="agent crashed"), "w1"
    )
    failed = await api.client.get_task(task.id)
    assert (failed.status, failed.error) == (TaskStatus.FAILED, "agent crashed")

    response = await api.http.post("/v1/worker/tasks/release", json={"task_id": task.id, "status": "running"})
    assert response.status_code == 422
    assert "status" in response.text
    response = await api.http.post("/v1/worker/tasks/release", json={"task_id": task.id, "status": "failed"})
    assert response.status_code == 400
    assert "X-Worker-ID" in response.json()["detail"]


async def test_unregister_requeues_the_workers_running_tasks(api: Api) -> None:
    await api.worker("w1")
    shared = await api.codebase("shared")
    task = await api.client.create_task(TaskCreate(title="t", prompt="p", codebase_id=shared))
    await api.client.claim_task(task.id, "w1")
    await api.client.unregister_worker("w1")
    back = await api.client.get_task(task.id)
    assert (back.status, back.worker_id, back.attempts) == (TaskStatus.PENDING, None, 0)


async def test_output_is_appended_in_order_and_bounded(serve: Serve) -> None:
    api = await serve(A2A_MAX_OUTPUT_CHARS="100")
    await api.worker("w1")
    await api.worker("w2")
    task = await api.client.create_task(
        TaskCreate(title="t", prompt="p", codebase_id=await api.codebase("c"))
    )
    await api.client.claim_task(task.id, "w1")
    await api.client.append_output(task.id, "w1", "line one\n")
    await api.client.append_output(task.id, "w1", "line two\n")
    output = await api.client.get_output(task.id)
    assert (output.output, output.truncated) == ("line one\nline two\n", False)
    with pytest.raises(ConflictError):
        await api.client.append_output(task.id, "w2", "not mine\n")

    lines = [f"line {i:03d}\n" for i in range(30)]
    for line in lines:
        await api.client.append_output(task.id, "w1", line)
    output = await api.client.get_output(task.id)
    assert output.truncated is True
    assert len(output.output) == 100
    assert ("line one\nline two\n" + "".join(lines)).endswith(output.output)


async def test_sessions_and_messages_sync_and_read_back(api: Api) -> None:
    await api.worker("w1")
    codebase = await api.codebase("c", worker_id="w1")
    sessions = [
        SessionInfo(id="s1", title="Fix the bug", message_count=2),
        SessionInfo(id="s2", title="Other"),
    ]
    assert await api.client.sync_sessions(codebase, "w1", sessions) == 2
    assert await api.client.sync_sessions(codebase, "w1", sessions[:1]) == 1
    stored = await api.client.list_sessions(codebase)
    assert [(s.id, s.title, s.worker_id) for s in stored] == [
        ("s1", "Fix the bug", "w1"),
        ("s2", "Other", "w1"),
    ]

    messages = [
        MessageSummary(id="m1", role="user", summary="please fix"),
        MessageSummary(id="m2", summary="fixed", tool_usage={"edit": 2, "bash": 1}),
    ]
    assert await api.client.sync_messages(codebase, "s1", "w1", messages) == 2
    got = await api.client.list_messages(codebase, "s1")
    assert [(m.id, m.role, m.tool_usage) for m in got] == [
        ("m1", "user", {}),
        ("m2", "assistant", {"edit": 2, "bash": 1}),
    ]

    # Messages may come before their session's metadata.
    assert await api.client.sync_messages(codebase, "s3", "w1", messages[:1]) == 1
    assert "s3" in {s.id for s in await api.client.list_sessions(codebase)}

    with pytest.raises(NotFoundError):
        await api.client.sync_sessions("unknown", "w1", sessions)


async def test_an_expired_lease_requeues_then_fails_after_max_attempts(serve: Serve) -> None:
    api = await serve(A2A_LEASE_SECONDS="0.5", A2A_MAX_ATTEMPTS="2")
    await api.worker("w1")
    task = await api.client.create_task(
        TaskCreate(title="t", prompt="p", codebase_id=await api.codebase("c"))
    )
    await api.client.claim_task(task.id, "w1")  # ... and the worker vanishes

    async def requeued() -> bool:
        return (await api.client.get_task(task.id)).status is TaskStatus.PENDING

    await eventually(requeued)
    again = await api.client.get_task(task.id)
    assert (again.attempts, again.worker_id) == (1, None)

    await api.client.claim_task(task.id, "w1")

    async def failed() -> bool:
        return (await api.client.get_task(task.id)).status is TaskStatus.FAILED

    await eventually(failed)
    final = await api.client.get_task(task.id)
    assert final.attempts == 2
    assert final.error is not None and "lease expired 2 times" in final.error
    with pytest.raises(ConflictError):
        await api.client.update_task_status(
            task.id, TaskStatusUpdate(status=TaskStatus.COMPLETED, worker_id="w1", result="late")
        )


async def test_heartbeats_renew_the_leases_of_running_tasks(serve: Serve) -> None:
    api = await serve(A2A_LEASE_SECONDS="1.5")
    await api.worker("w1")
    task = await api.client.create_task(
        TaskCreate(title="t", prompt="p", codebase_id=await api.codebase("c"))
    )
    claimed = await api.client.claim_task(task.id, "w1")
    latest = claimed.lease_expires_at
    for _ in range(8):  # more than one lease length, heartbeating every fifth of it
        await asyncio.sleep(0.3)
        await api.client.heartbeat("w1")
        current = await api.client.get_task(task.id)
        assert current.status is TaskStatus.RUNNING
        assert current.lease_expires_at is not None and current.lease_expires_at > latest
        latest = current.lease_expires_at
    assert current.attempts == 0


async def test_fifty_concurrent_claims_of_one_task_give_exactly_one_200(api: Api) -> None:
    workers = [f"w{i:02d}" for i in range(50)]
    for worker_id in workers:
        await api.worker(worker_id)
    task = await api.client.create_task(
        TaskCreate(title="t", prompt="p", codebase_id=await api.codebase("c"))
    )

    async def claim(worker_id: str) -> int:
        response = await api.http.post(
            "/v1/worker/tasks/claim", json={"task_id": task.id}, headers={"X-Worker-ID": worker_id}
        )
        return response.status_code

    codes = await asyncio.gather(*(claim(w) for w in workers))
    assert sorted(set(codes)) == [200, 409]
    assert codes.count(200) == 1
    winner = workers[codes.index(200)]
    assert (await api.client.get_task(task.id)).worker_id == winner


async def test_bad_bodies_are_422_naming_the_field(api: Api) -> None:
    cases = [
        ("/v1/agent/tasks", {"title": "t", "prompt": "p", "priority": "high"}, "priority"),
        ("/v1/agent/tasks", {"title": "t"}, "prompt"),
        ("/v1/agent/workers/register", {"worker_id": "has space"}, "worker_id"),
        ("/v1/agent/codebases", {"name": "n", "path": "relative/path"}, "path"),
        (
            "/v1/agent/tasks",
            {"title": "t", "prompt": "p", "metadata": {"required_capabilities": "gpu"}},
            "metadata",
        ),
    ]
    for path, body, field in cases:
        response = await api.http.post(path, json=body)
        assert response.status_code == 422, (path, body)
        locations = [error["loc"] for error in response.json()["detail"]]
        assert any(field in loc for loc in locations), (field, locations)
    response = await api.http.post(
        "/v1/agent/tasks", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422


async def test_oversized_bodies_are_413(serve: Serve) -> None:
    api = await serve(A2A_MAX_BODY_BYTES="2048")
    big = {"title": "t", "prompt": "x" * 4000}
    response = await api.http.post("/v1/agent/tasks", json=big)
    assert response.status_code == 413
    assert "2048" in response.json()["detail"]

    async def chunks():  # no Content-Length: the limit is counted while reading
        for _ in range(8):
            yield b" " * 512

    response = await api.http.post(
        "/v1/agent/tasks", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert (await api.http.get("/healthz")).status_code == 200
    assert await api.client.list_tasks() == []


async def test_bearer_tokens(serve: Serve) -> None:
    api = await serve(A2A_AUTH_TOKENS="alpha, beta")
    assert (await api.http.get("/v1/agent/workers")).status_code == 401
    assert (await api.http.get("/v1/agent/workers")).headers["www-authenticate"] == "Bearer"
    wrong = await api.http.get("/v1/agent/workers", headers={"Authorization": "Bearer gamma"})
    assert (wrong.status_code, "detail" in wrong.json()) == (403, True)
    for token in ("alpha", "beta"):
        ok = await api.http.get("/v1/agent/workers", headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200
    unauthenticated_bad_body = await api.http.post("/v1/agent/tasks", json={})
    assert unauthenticated_bad_body.status_code == 401
    for open_path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"):
        assert (await api.http.get(open_path)).status_code == 200, open_path


async def test_health_metrics_and_openapi(api: Api) -> None:
    ready = (await api.http.get("/readyz")).json()
    assert ready == {"status": "ok", "storage": api.settings.storage, "detail": None}
    await api.worker("w1")
    await api.worker("w2")
    task = await api.client.create_task(
        TaskCreate(title="t", prompt="p", codebase_id=await api.codebase("c"))
    )
    await api.client.claim_task(task.id, "w1")
    with pytest.raises(ConflictError):
        await api.client.claim_task(task.id, "w2")
    metrics = (await api.http.get("/metrics")).text
    assert 'codetether_server_tasks{status="running"} 1.0' in metrics
    assert 'codetether_server_claims_total{outcome="claimed"} 1.0' in metrics
    assert 'codetether_server_claims_total{outcome="conflict"} 1.0' in metrics
    assert 'codetether_server_workers{status="active"} 2.0' in metrics
    assert 'route="/v1/worker/tasks/claim",status="200"' in metrics
    paths = (await api.http.get("/openapi.json")).json()["paths"]
    for path in (
        "/v1/agent/workers/register",
        "/v1/agent/workers/{worker_id}/heartbeat",
        "/v1/agent/codebases",
        "/v1/agent/tasks",
        "/v1/worker/tasks/claim",
        "/v1/worker/tasks/release",
        "/v1/agent/codebases/{codebase_id}/sessions/{session_id}/messages/sync",
    ):
        assert path in paths
