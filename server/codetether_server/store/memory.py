"""In-memory storage: one process, nothing survives a restart. For demos and quick starts."""

from __future__ import annotations

import asyncio
from datetime import datetime

from codetether_contract.models import (
    Codebase,
    Message,
    Session,
    Task,
    TaskOutput,
    TaskStatus,
    WorkerRegistration,
    WorkerStatus,
)
from codetether_server import leases
from codetether_server.store.base import (
    CodebaseUpsert,
    Store,
    TaskChange,
    TaskCheck,
    TaskNotFound,
    TaskQuery,
    WorkerRecord,
    matches,
    message_order,
    sort_tasks,
)


class MemoryStore(Store):
    kind = "memory"

    def __init__(self) -> None:
        # One lock for every change: the critical sections are short and never await I/O.
        self._lock = asyncio.Lock()
        self._workers: dict[str, WorkerRecord] = {}
        self._codebases: dict[str, Codebase] = {}
        self._tasks: dict[str, Task] = {}
        self._task_ids_by_status: dict[TaskStatus, set[str]] = {status: set() for status in TaskStatus}
        self._outputs: dict[str, tuple[str, bool]] = {}
        self._sessions: dict[tuple[str, str], Session] = {}
        self._messages: dict[tuple[str, str], dict[str, Message]] = {}

    async def ping(self) -> None:
        return None

    # ------------------------------------------------------------------ workers

    async def upsert_worker(self, reg: WorkerRegistration, now: datetime) -> WorkerRecord:
        async with self._lock:
            record = WorkerRecord.from_registration(reg, now, self._workers.get(reg.worker_id))
            self._workers[record.id] = record
            return record

    async def get_worker(self, worker_id: str) -> WorkerRecord | None:
        return self._workers.get(worker_id)

    async def list_workers(self) -> list[WorkerRecord]:
        return sorted(self._workers.values(), key=lambda w: w.id)

    async def touch_worker(
        self, worker_id: str, status: WorkerStatus | None, active_tasks: int | None, now: datetime
    ) -> WorkerRecord | None:
        async with self._lock:
            record = self._workers.get(worker_id)
            if record is None:
                return None
            record = record.touched(status, active_tasks, now)
            self._workers[worker_id] = record
            return record

    async def delete_worker(self, worker_id: str) -> bool:
        async with self._lock:
            return self._workers.pop(worker_id, None) is not None

    # ------------------------------------------------------------------ codebases

    async def upsert_codebase(
        self, upsert: CodebaseUpsert, new_id: str, now: datetime
    ) -> tuple[Codebase, Codebase | None]:
        async with self._lock:
            existing = self._find_codebase(upsert)
            codebase = upsert.apply(existing, new_id, now)
            self._codebases[codebase.id] = codebase
            return codebase, existing

    def _find_codebase(self, upsert: CodebaseUpsert) -> Codebase | None:
        if upsert.id is not None:
            return self._codebases.get(upsert.id)
        for codebase in self._codebases.values():
            if codebase.name == upsert.name and codebase.worker_id == upsert.worker_id:
                return codebase
        return None

    async def get_codebase(self, codebase_id: str) -> Codebase | None:
        return self._codebases.get(codebase_id)

    async def list_codebases(self, worker_id: str | None = None) -> list[Codebase]:
        found = [c for c in self._codebases.values() if worker_id is None or c.worker_id == worker_id]
        return sorted(found, key=lambda c: (c.created_at, c.id))

    async def delete_codebase(self, codebase_id: str) -> Codebase | None:
        async with self._lock:
            return self._codebases.pop(codebase_id, None)

    # ------------------------------------------------------------------ tasks

    async def insert_task(self, task: Task) -> None:
        async with self._lock:
            self._tasks[task.id] = task
            self._task_ids_by_status[task.status].add(task.id)

    async def get_task(self, task_id: str) -> Task | None:
        return self._tasks.get(task_id)

    async def list_tasks(self, query: TaskQuery) -> list[Task]:
        if query.status is None:
            candidates: list[Task] = list(self._tasks.values())
        else:
            candidates = [self._tasks[i] for i in self._task_ids_by_status[query.status]]
        return sort_tasks([t for t in candidates if matches(t, query)])[: query.limit]

    async def transition(self, task_id: str, change: TaskChange) -> tuple[Task, Task]:
        async with self._lock:
            before = self._tasks.get(task_id)
            if before is None:
                raise TaskNotFound(task_id)
            after = change(before)
            self._tasks[task_id] = after
            self._task_ids_by_status[before.status].discard(task_id)
            self._task_ids_by_status[after.status].add(task_id)
            if after.status is TaskStatus.COMPLETED and before.status is not TaskStatus.COMPLETED:
                worker = self._workers.get(after.worker_id or "")
                if worker is not None:
                    self._workers[worker.id] = worker.model_copy(
                        update={"tasks_completed": worker.tasks_completed + 1}
                    )
            return before, after

    async def running_task_ids(self, worker_id: str) -> list[str]:
        running = (self._tasks[i] for i in self._task_ids_by_status[TaskStatus.RUNNING])
        return sorted(t.id for t in running if t.worker_id == worker_id)

    async def expired_task_ids(self, now: datetime) -> list[str]:
        running = (self._tasks[i] for i in self._task_ids_by_status[TaskStatus.RUNNING])
        return [t.id for t in running if leases.is_expired(t, now)]

    async def count_tasks(self) -> dict[TaskStatus, int]:
        return {status: len(ids) for status, ids in self._task_ids_by_status.items() if ids}

    async def finished_task_ids(self, before: datetime, limit: int) -> list[str]:
        finished = [
            self._tasks[i]
            for status in TaskStatus
            if status.is_final
            for i in self._task_ids_by_status[status]
        ]
        old = [t for t in finished if t.completed_at is not None and t.completed_at < before]
        old.sort(key=lambda t: (t.completed_at, t.id))
        return [t.id for t in old[:limit]]

    async def delete_task_if(self, task_id: str, check: TaskCheck) -> bool:
        async with self._lock:
            task = self._tasks.get(task_id)
            if task is None or not check(task):
                return False
            del self._tasks[task_id]
            self._task_ids_by_status[task.status].discard(task_id)
            self._outputs.pop(task_id, None)
            return True

    # ------------------------------------------------------------------ output

    async def append_output(self, task_id: str, chunk: str, limit: int) -> None:
        async with self._lock:
            existing, truncated = self._outputs.get(task_id, ("", False))
            output, cut = leases.append_output(existing, chunk, limit)
            self._outputs[task_id] = (output, truncated or cut)

    async def get_output(self, task_id: str) -> TaskOutput:
        output, truncated = self._outputs.get(task_id, ("", False))
        return TaskOutput(task_id=task_id, output=output, truncated=truncated)

    # ------------------------------------------------------------------ sessions

    async def upsert_sessions(self, sessions: list[Session]) -> None:
        async with self._lock:
            for session in sessions:
                self._sessions[(session.codebase_id, session.id)] = session

    async def list_sessions(self, codebase_id: str) -> list[Session]:
        found = [s for (cid, _), s in self._sessions.items() if cid == codebase_id]
        return sorted(found, key=lambda s: s.id)

    async def get_session(self, codebase_id: str, session_id: str) -> Session | None:
        return self._sessions.get((codebase_id, session_id))

    async def upsert_messages(self, codebase_id: str, messages: list[Message]) -> None:
        async with self._lock:
            for message in messages:
                self._messages.setdefault((codebase_id, message.session_id), {})[message.id] = message

    async def list_messages(self, codebase_id: str, session_id: str) -> list[Message]:
        found = list(self._messages.get((codebase_id, session_id), {}).values())
        return sorted(found, key=message_order)
