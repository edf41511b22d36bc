from __future__ import annotations

import pytest
from pydantic import ValidationError

from codetether_contract.events import (
    EventType,
    TaskEvent,
    channels_for_worker,
    global_channel,
    shared_channel,
    worker_channel,
)
from codetether_contract.models import (
    GLOBAL_CODEBASE,
    CodebaseCreate,
    ReleaseRequest,
    TaskCreate,
    TaskStatus,
    WorkerRegistration,
    global_codebase_id,
    is_valid_id,
)


def _field_names(exc: ValidationError) -> set[str]:
    return {".".join(str(p) for p in err["loc"]) for err in exc.errors()}


def test_task_defaults_follow_the_seed() -> None:
    task = TaskCreate(title="t", prompt="p")
    assert task.codebase_id == GLOBAL_CODEBASE
    assert task.agent_type == "build"
    assert task.priority == 0


def test_workspace_spellings_are_accepted_as_aliases() -> None:
    task = TaskCreate.model_validate({"title": "t", "prompt": "p", "workspace_id": "cb-1"})
    assert task.codebase_id == "cb-1"
    codebase = CodebaseCreate.model_validate({"name": "n", "path": "/x", "workspace_id": "global"})
    assert codebase.codebase_id == "global"
    reg = WorkerRegistration.model_validate({"worker_id": "w", "workspaces": ["a"]})
    assert reg.codebases == ["a"]
    # Output uses the seed's names only.
    assert "workspace_id" not in task.model_dump()


def test_worker_defaults_match_the_seed_capabilities() -> None:
    assert WorkerRegistration(worker_id="w-1").capabilities == ["agent", "build", "deploy"]


@pytest.mark.parametrize("bad", ["", "a/b", "has space", "-leading", "x" * 300])
def test_ids_that_cannot_travel_in_a_url_are_rejected(bad: str) -> None:
    assert not is_valid_id(bad)
    with pytest.raises(ValidationError) as exc:
        WorkerRegistration(worker_id=bad)
    assert "worker_id" in _field_names(exc.value)


def test_relative_codebase_path_names_the_field() -> None:
    with pytest.raises(ValidationError) as exc:
        CodebaseCreate(name="n", path="relative/path")
    assert _field_names(exc.value) == {"path"}


def test_required_capabilities_must_be_a_list_of_strings() -> None:
    with pytest.raises(ValidationError) as exc:
        TaskCreate(title="t", prompt="p", metadata={"required_capabilities": "gpu"})
    assert "metadata" in _field_names(exc.value)
    ok = TaskCreate(title="t", prompt="p", metadata={"required_capabilities": ["gpu"]})
    assert ok.metadata["required_capabilities"] == ["gpu"]


def test_release_cannot_leave_a_task_running() -> None:
    with pytest.raises(ValidationError) as exc:
        ReleaseRequest(task_id="t", status=TaskStatus.RUNNING)
    assert _field_names(exc.value) == {"status"}
    assert ReleaseRequest(task_id="t", status=TaskStatus.PENDING).status is TaskStatus.PENDING


def test_final_statuses() -> None:
    assert {s for s in TaskStatus if s.is_final} == {"completed", "failed", "cancelled"}


def test_global_codebase_ids_are_per_worker() -> None:
    assert global_codebase_id("pool-0") == "global-pool-0"
    assert is_valid_id(global_codebase_id("pool-0"))


def test_channels() -> None:
    assert worker_channel("w-1") == "codetether:tasks:worker:w-1"
    assert global_channel("p") == "p:tasks:global"
    assert shared_channel() == "codetether:tasks:shared"
    assert global_channel() in channels_for_worker("w", serves_global=True)
    assert global_channel() not in channels_for_worker("w", serves_global=False)


def test_task_event_round_trips_through_json() -> None:
    event = TaskEvent(event=EventType.TASK_AVAILABLE, task_id="t1", required_capabilities=["gpu"])
    again = TaskEvent.model_validate_json(event.model_dump_json())
    assert again == event
