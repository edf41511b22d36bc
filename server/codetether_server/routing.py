"""Who may run what, and where the news of a task goes. Pure functions, no I/O.

Rules (server-enforced at claim time and used to filter what a worker is told about):

* a task whose codebase has a ``worker_id`` goes only to that worker (worker affinity);
* a task with ``codebase_id: "global"`` goes to any worker that registered a global codebase;
* a task of a codebase registered without ``worker_id`` goes to any worker;
* ``metadata.required_capabilities`` must be a subset of the worker's capabilities.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from codetether_contract.events import global_channel, shared_channel, worker_channel
from codetether_contract.models import GLOBAL_CODEBASE, Codebase, Task, global_codebase_id


@dataclass(frozen=True)
class WorkerView:
    """What routing needs to know about a worker."""

    id: str
    capabilities: frozenset[str]
    serves_global: bool


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""


ALLOWED = Decision(True)


def serves_global(worker_id: str, registered_global_id: str | None, codebases: Iterable[Codebase]) -> bool:
    """A worker serves global tasks when it registered a global codebase (either way the seed allows)."""
    if registered_global_id:
        return True
    wanted = global_codebase_id(worker_id)
    return any(codebase.id == wanted for codebase in codebases)


def required_capabilities(task: Task) -> frozenset[str]:
    return frozenset(task.required_capabilities)


def may_run(task: Task, codebase: Codebase | None, worker: WorkerView) -> Decision:
    """May ``worker`` run ``task``? ``codebase`` is the task's codebase (None when not registered)."""
    if task.codebase_id == GLOBAL_CODEBASE:
        if not worker.serves_global:
            return Decision(False, f"worker {worker.id} has no global codebase; task {task.id} is global")
    elif codebase is None:
        return Decision(False, f"codebase {task.codebase_id} of task {task.id} is not registered")
    elif codebase.worker_id is not None and codebase.worker_id != worker.id:
        return Decision(
            False, f"codebase {codebase.id} is assigned to worker {codebase.worker_id}, not {worker.id}"
        )
    missing = required_capabilities(task) - worker.capabilities
    if missing:
        return Decision(
            False, f"worker {worker.id} lacks required capabilities: {', '.join(sorted(missing))}"
        )
    return ALLOWED


def codebase_ids_for(worker: WorkerView, codebases: Iterable[Codebase]) -> set[str]:
    """Every task ``codebase_id`` whose tasks the worker may run, capabilities aside."""
    ids = {cb.id for cb in codebases if cb.worker_id is None or cb.worker_id == worker.id}
    if worker.serves_global:
        ids.add(GLOBAL_CODEBASE)
    return ids


def task_target(task: Task, codebase: Codebase | None) -> str | None:
    """The worker a task is pinned to, if any."""
    if task.codebase_id == GLOBAL_CODEBASE or codebase is None:
        return None
    return codebase.worker_id


def task_channel(task: Task, codebase: Codebase | None, prefix: str) -> str | None:
    """The Redis channel that hears about ``task`` becoming claimable; None when no worker can run it."""
    if task.codebase_id == GLOBAL_CODEBASE:
        return global_channel(prefix)
    if codebase is None:
        return None
    if codebase.worker_id is not None:
        return worker_channel(codebase.worker_id, prefix)
    return shared_channel(prefix)


def order_key(task: Task) -> tuple[int, float, str]:
    """Priority first (higher first), then oldest first."""
    return (-task.priority, task.created_at.timestamp(), task.id)
