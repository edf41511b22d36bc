"""The one storage interface. memory.py, redis.py and postgres.py implement it with the same behaviour.

State changes of a task go through ``transition``: the backend reads the task, applies a pure rule
from ``leases`` and writes the result in one atomic step (lock, Redis transaction, row lock). That is
what makes a claim exactly-once on every backend and the lease sweeper safe in every replica.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel, Field

from codetether_contract.models import (
    GLOBAL_CODEBASE,
    Codebase,
    Message,
    Session,
    Task,
    TaskOutput,
    TaskStatus,
    WorkerRegistration,
    WorkerStatus,
)

TaskChange = Callable[[Task], Task]
TaskCheck = Callable[[Task], bool]


class WorkerRecord(BaseModel):
    """A worker as stored. The answer model (contract ``Worker``) is derived from it."""

    id: str
    name: str
    hostname: str = ""
    capabilities: list[str] = Field(default_factory=list)
    codebases: list[str] = Field(default_factory=list)
    global_codebase_id: str | None = None
    max_concurrent_tasks: int = 1
    version: str = ""
    status: WorkerStatus = WorkerStatus.ACTIVE
    active_tasks: int = 0
    tasks_completed: int = 0
    last_heartbeat: datetime
    registered_at: datetime

    @classmethod
    def from_registration(
        cls, reg: WorkerRegistration, now: datetime, previous: WorkerRecord | None
    ) -> WorkerRecord:
        return cls(
            id=reg.worker_id,
            name=reg.name or reg.worker_id,
            hostname=reg.hostname,
            capabilities=list(reg.capabilities),
            codebases=list(reg.codebases),
            global_codebase_id=reg.global_codebase_id,
            max_concurrent_tasks=reg.max_concurrent_tasks,
            version=reg.version,
            status=WorkerStatus.ACTIVE,
            active_tasks=previous.active_tasks if previous else 0,
            tasks_completed=previous.tasks_completed if previous else 0,
            last_heartbeat=now,
            registered_at=previous.registered_at if previous else now,
        )

    def touched(self, status: WorkerStatus | None, active_tasks: int | None, now: datetime) -> WorkerRecord:
        update: dict[str, object] = {"last_heartbeat": now}
        if status is not None and status is not WorkerStatus.OFFLINE:
            update["status"] = status
        elif self.status is WorkerStatus.OFFLINE:
            update["status"] = WorkerStatus.ACTIVE
        if active_tasks is not None:
            update["active_tasks"] = active_tasks
        return self.model_copy(update=update)


@dataclass(frozen=True)
class CodebaseUpsert:
    """A resolved codebase registration: ``id`` None means "same (name, worker_id) or a new id"."""

    id: str | None
    name: str
    path: str
    description: str
    worker_id: str | None
    is_global: bool
    git_url: str | None
    git_ref: str | None

    def apply(self, existing: Codebase | None, new_id: str, now: datetime) -> Codebase:
        return Codebase(
            id=existing.id if existing else (self.id or new_id),
            name=self.name,
            path=self.path,
            description=self.description,
            worker_id=self.worker_id,
            is_global=self.is_global,
            git_url=self.git_url,
            git_ref=self.git_ref,
            created_at=existing.created_at if existing else now,
            updated_at=now,
        )


@dataclass(frozen=True)
class TaskQuery:
    status: TaskStatus | None = None
    codebase_ids: Collection[str] | None = None  # None: any codebase
    worker_id: str | None = None  # the task's (last) holder; None: any
    limit: int = 500


class TaskNotFound(LookupError):
    pass


@dataclass(frozen=True)
class ClaimInputs:
    """What a claim decision reads: the worker, the task, and the task's codebase (when registered)."""

    worker: WorkerRecord | None
    task: Task | None
    codebase: Codebase | None


class Store(abc.ABC):
    """Storage of workers, codebases, tasks, task output, sessions and messages."""

    kind: str = ""
    unavailable_errors: tuple[type[Exception], ...] = ()
    """Exceptions meaning "storage unreachable": answered with 503, which clients retry."""

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Connect, create or migrate the schema."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise when the storage cannot be reached."""

    # ------------------------------------------------------------------ workers

    @abc.abstractmethod
    async def upsert_worker(self, reg: WorkerRegistration, now: datetime) -> WorkerRecord: ...

    @abc.abstractmethod
    async def get_worker(self, worker_id: str) -> WorkerRecord | None: ...

    @abc.abstractmethod
    async def list_workers(self) -> list[WorkerRecord]: ...

    @abc.abstractmethod
    async def touch_worker(
        self, worker_id: str, status: WorkerStatus | None, active_tasks: int | None, now: datetime
    ) -> WorkerRecord | None:
        """Record a heartbeat; None when the worker is unknown."""

    @abc.abstractmethod
    async def delete_worker(self, worker_id: str) -> bool: ...

    # ------------------------------------------------------------------ codebases

    @abc.abstractmethod
    async def upsert_codebase(
        self, upsert: CodebaseUpsert, new_id: str, now: datetime
    ) -> tuple[Codebase, Codebase | None]:
        """Insert or update atomically; returns (stored, previous)."""

    @abc.abstractmethod
    async def get_codebase(self, codebase_id: str) -> Codebase | None: ...

    @abc.abstractmethod
    async def list_codebases(self, worker_id: str | None = None) -> list[Codebase]: ...

    @abc.abstractmethod
    async def delete_codebase(self, codebase_id: str) -> Codebase | None: ...

    # ------------------------------------------------------------------ tasks

    @abc.abstractmethod
    async def insert_task(self, task: Task) -> None: ...

    @abc.abstractmethod
    async def get_task(self, task_id: str) -> Task | None: ...

    @abc.abstractmethod
    async def list_tasks(self, query: TaskQuery) -> list[Task]:
        """Matching tasks, highest priority first, then oldest first."""

    async def claim_inputs(self, task_id: str, worker_id: str) -> ClaimInputs:
        """Read what a claim needs; backends override it to do so in fewer round trips."""
        worker = await self.get_worker(worker_id)
        task = await self.get_task(task_id)
        codebase = None
        if task is not None and task.codebase_id != GLOBAL_CODEBASE:
            codebase = await self.get_codebase(task.codebase_id)
        return ClaimInputs(worker, task, codebase)

    @abc.abstractmethod
    async def transition(self, task_id: str, change: TaskChange) -> tuple[Task, Task]:
        """Apply ``change`` atomically; returns (before, after). Raises TaskNotFound, or what
        ``change`` raises (then nothing is written). Completing a task counts for its worker."""

    @abc.abstractmethod
    async def running_task_ids(self, worker_id: str) -> list[str]: ...

    @abc.abstractmethod
    async def expired_task_ids(self, now: datetime) -> list[str]:
        """Running tasks whose lease ended (candidates; ``transition`` re-checks)."""

    @abc.abstractmethod
    async def count_tasks(self) -> dict[TaskStatus, int]: ...

    @abc.abstractmethod
    async def finished_task_ids(self, before: datetime, limit: int) -> list[str]:
        """Final tasks that finished before ``before``, oldest first (candidates; deletion re-checks)."""

    @abc.abstractmethod
    async def delete_task_if(self, task_id: str, check: TaskCheck) -> bool:
        """Delete the task and its output atomically when ``check`` approves the task as stored now.

        False when the task is gone or ``check`` says no, so several replicas may try the same task.
        """

    # ------------------------------------------------------------------ output

    @abc.abstractmethod
    async def append_output(self, task_id: str, chunk: str, limit: int) -> None: ...

    @abc.abstractmethod
    async def get_output(self, task_id: str) -> TaskOutput: ...

    # ------------------------------------------------------------------ sessions

    @abc.abstractmethod
    async def upsert_sessions(self, sessions: list[Session]) -> None: ...

    @abc.abstractmethod
    async def list_sessions(self, codebase_id: str) -> list[Session]: ...

    @abc.abstractmethod
    async def get_session(self, codebase_id: str, session_id: str) -> Session | None: ...

    @abc.abstractmethod
    async def upsert_messages(self, codebase_id: str, messages: list[Message]) -> None: ...

    @abc.abstractmethod
    async def list_messages(self, codebase_id: str, session_id: str) -> list[Message]: ...


def sort_tasks(tasks: list[Task]) -> list[Task]:
    from codetether_server.routing import order_key

    return sorted(tasks, key=order_key)


def matches(task: Task, query: TaskQuery) -> bool:
    if query.status is not None and task.status is not query.status:
        return False
    if query.codebase_ids is not None and task.codebase_id not in query.codebase_ids:
        return False
    return query.worker_id is None or task.worker_id == query.worker_id


def message_order(message: Message) -> tuple[float, str]:
    return (message.created_at.timestamp() if message.created_at else 0.0, message.id)
