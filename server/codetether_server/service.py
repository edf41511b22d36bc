"""What the server does, between the HTTP routes (app.py) and storage (store/).

Reads the state a decision needs, asks the pure rules (routing, leases), applies the change through
the store's atomic step, then publishes events and counts metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from datetime import datetime

from codetether_contract.events import EventType
from codetether_contract.models import (
    GLOBAL_CODEBASE,
    ClaimAnswer,
    Codebase,
    CodebaseCreate,
    HeartbeatRequest,
    Message,
    MessageSync,
    ReleaseRequest,
    Session,
    SessionSync,
    Task,
    TaskCreate,
    TaskOutput,
    TaskStatus,
    TaskStatusUpdate,
    Worker,
    WorkerRegistration,
    WorkerStatus,
    global_codebase_id,
    utcnow,
)
from codetether_server import leases, routing
from codetether_server.errors import BadRequest, Conflict, NotFound
from codetether_server.events import EventPublisher
from codetether_server.metrics import Metrics
from codetether_server.settings import Settings
from codetether_server.store.base import (
    CodebaseUpsert,
    Store,
    TaskChange,
    TaskNotFound,
    TaskQuery,
    WorkerRecord,
)

log = logging.getLogger("codetether_server")

NO_WORKERS_DETAIL = (
    "No workers available: no worker is registered with this server, so nobody can serve the path. "
    "Start a worker (codetether-worker) on a machine that can access the path, with A2A_SERVER_URL "
    "pointing at this server, or register the codebase with an explicit worker_id."
)


class Service:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        events: EventPublisher,
        metrics: Metrics,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.settings = settings
        self.events = events
        self.metrics = metrics
        self.clock = clock

    # ------------------------------------------------------------------ workers

    async def register_worker(self, reg: WorkerRegistration) -> Worker:
        record = await self.store.upsert_worker(reg, self.clock())
        log.info("worker registered", extra={"worker_id": record.id, "capabilities": record.capabilities})
        return self._worker_answer(record, await self.store.list_codebases(record.id))

    async def heartbeat(self, worker_id: str, beat: HeartbeatRequest) -> None:
        now = self.clock()
        record = await self.store.touch_worker(worker_id, beat.status, beat.active_tasks, now)
        if record is None:
            raise NotFound(f"worker {worker_id} is not registered; register it again")
        until = leases.lease_until(now, self.settings.lease_seconds)
        for task_id in await self.store.running_task_ids(worker_id):
            await self._try_transition(task_id, lambda t: leases.renew(t, worker_id, now, until))

    async def unregister_worker(self, worker_id: str) -> None:
        if not await self.store.delete_worker(worker_id):
            raise NotFound(f"worker {worker_id} is not registered")
        now = self.clock()
        for task_id in await self.store.running_task_ids(worker_id):
            changed = await self._try_transition(task_id, lambda t: leases.hand_back(t, worker_id, now))
            if changed is not None:
                await self._announce(changed)
        log.info("worker unregistered", extra={"worker_id": worker_id})

    async def list_workers(self) -> list[Worker]:
        records = await self.store.list_workers()
        codebases = await self.store.list_codebases()
        return [self._worker_answer(r, [c for c in codebases if c.worker_id == r.id]) for r in records]

    async def get_worker(self, worker_id: str) -> Worker:
        record = await self.store.get_worker(worker_id)
        if record is None:
            raise NotFound(f"worker {worker_id} is not registered")
        return self._worker_answer(record, await self.store.list_codebases(worker_id))

    def _worker_answer(self, record: WorkerRecord, own_codebases: list[Codebase]) -> Worker:
        global_id = global_codebase_id(record.id)
        has_global = any(c.id == global_id for c in own_codebases)
        return Worker(
            id=record.id,
            name=record.name,
            status=leases.worker_status(
                record.status, record.last_heartbeat, self.clock(), self.settings.worker_offline_seconds
            ),
            last_heartbeat=record.last_heartbeat,
            codebases=len(own_codebases),
            tasks_completed=record.tasks_completed,
            hostname=record.hostname,
            capabilities=record.capabilities,
            codebase_ids=[c.id for c in own_codebases],
            global_codebase_id=global_id if has_global else record.global_codebase_id,
            active_tasks=record.active_tasks,
            max_concurrent_tasks=record.max_concurrent_tasks,
            registered_at=record.registered_at,
            version=record.version,
        )

    async def _worker_view(self, record: WorkerRecord, *, for_global: bool = True) -> routing.WorkerView:
        """Routing's view of a worker; whether it serves global tasks is looked up only when asked."""
        serves_global = False
        if for_global:
            own = await self.store.list_codebases(record.id)
            serves_global = routing.serves_global(record.id, record.global_codebase_id, own)
        return routing.WorkerView(
            id=record.id, capabilities=frozenset(record.capabilities), serves_global=serves_global
        )

    # ------------------------------------------------------------------ codebases

    async def register_codebase(self, request: CodebaseCreate) -> Codebase:
        is_global = request.codebase_id == GLOBAL_CODEBASE
        if is_global and not request.worker_id:
            raise BadRequest(
                'codebase_id "global" registers a worker\'s global codebase: worker_id is required'
            )
        if not request.worker_id and not await self.store.list_workers():
            raise BadRequest(NO_WORKERS_DETAIL)
        upsert = CodebaseUpsert(
            id=global_codebase_id(request.worker_id)
            if is_global and request.worker_id
            else request.codebase_id,
            name=request.name,
            path=request.path,
            description=request.description,
            worker_id=request.worker_id,
            is_global=is_global,
            git_url=request.git_url,
            git_ref=request.git_ref,
        )
        codebase, previous = await self.store.upsert_codebase(upsert, uuid.uuid4().hex, self.clock())
        if previous is not None and previous.worker_id and previous.worker_id != codebase.worker_id:
            await self.events.codebase_changed(EventType.CODEBASE_REMOVED, previous, previous.worker_id)
        if codebase.worker_id and _worker_sees_change(previous, codebase):
            await self.events.codebase_changed(EventType.CODEBASE_ASSIGNED, codebase, codebase.worker_id)
        log.info(
            "codebase registered",
            extra={
                "codebase_id": codebase.id,
                "worker_id": codebase.worker_id,
                "updated": previous is not None,
            },
        )
        return codebase

    async def list_codebases(self, worker_id: str | None) -> list[Codebase]:
        return await self.store.list_codebases(worker_id)

    async def get_codebase(self, codebase_id: str) -> Codebase:
        codebase = await self.store.get_codebase(codebase_id)
        if codebase is None:
            raise NotFound(f"codebase {codebase_id} is not registered")
        return codebase

    async def delete_codebase(self, codebase_id: str) -> Codebase:
        codebase = await self.store.delete_codebase(codebase_id)
        if codebase is None:
            raise NotFound(f"codebase {codebase_id} is not registered")
        if codebase.worker_id:
            await self.events.codebase_changed(EventType.CODEBASE_REMOVED, codebase, codebase.worker_id)
        log.info("codebase removed", extra={"codebase_id": codebase_id})
        return codebase

    # ------------------------------------------------------------------ tasks

    async def create_task(self, request: TaskCreate) -> Task:
        codebase = None
        if request.codebase_id != GLOBAL_CODEBASE:
            codebase = await self.store.get_codebase(request.codebase_id)
            if codebase is None:
                raise NotFound(
                    f'codebase_id {request.codebase_id} is not registered (use a registered id or "global")'
                )
        now = self.clock()
        task = Task(
            id=uuid.uuid4().hex,
            title=request.title,
            prompt=request.prompt,
            agent_type=request.agent_type,
            codebase_id=request.codebase_id,
            priority=request.priority,
            metadata=request.metadata,
            model=request.model,
            status=TaskStatus.PENDING,
            max_attempts=request.max_attempts or self.settings.max_attempts,
            created_at=now,
            updated_at=now,
        )
        await self.store.insert_task(task)
        self.metrics.tasks_created.inc()
        log.debug("task created", extra={"task_id": task.id, "codebase_id": task.codebase_id})
        await self.events.task_available(task, codebase)
        return task

    async def get_task(self, task_id: str) -> Task:
        task = await self.store.get_task(task_id)
        if task is None:
            raise NotFound(f"task {task_id} does not exist")
        return task

    async def list_tasks(self, status: TaskStatus | None, worker_id: str | None, limit: int) -> list[Task]:
        if worker_id is None:
            return await self.store.list_tasks(TaskQuery(status=status, limit=limit))
        record = await self.store.get_worker(worker_id)
        if record is None:
            raise NotFound(f"worker {worker_id} is not registered; register it again")
        found: list[Task] = []
        if status is None or status is TaskStatus.PENDING:
            found.extend(await self._claimable(record, limit))
        if status is not TaskStatus.PENDING:
            found.extend(
                await self.store.list_tasks(TaskQuery(status=status, worker_id=worker_id, limit=limit))
            )
        return sorted(found, key=routing.order_key)[:limit]

    async def _claimable(self, record: WorkerRecord, limit: int) -> list[Task]:
        view = await self._worker_view(record)
        codebases = {c.id: c for c in await self.store.list_codebases()}
        ids = routing.codebase_ids_for(view, codebases.values())
        candidates = await self.store.list_tasks(
            TaskQuery(status=TaskStatus.PENDING, codebase_ids=ids, limit=limit)
        )
        return [t for t in candidates if routing.may_run(t, codebases.get(t.codebase_id), view).allowed]

    async def claim(self, task_id: str, worker_id: str) -> ClaimAnswer:
        inputs = await self.store.claim_inputs(task_id, worker_id)
        record, task = inputs.worker, inputs.task
        if record is None:
            self.metrics.claims.labels("not_found").inc()
            raise NotFound(f"worker {worker_id} is not registered; register it again")
        if task is None:
            self.metrics.claims.labels("not_found").inc()
            raise NotFound(f"task {task_id} does not exist")
        renewing = task.status is TaskStatus.RUNNING and task.worker_id == worker_id
        if not renewing:
            await self._check_eligible(task, inputs.codebase, record)
        now = self.clock()
        until = leases.lease_until(now, self.settings.lease_seconds)
        try:
            _, after = await self._transition(task_id, lambda t: leases.claim(t, worker_id, now, until))
        except Conflict:
            self.metrics.claims.labels("conflict").inc()
            raise
        self.metrics.claims.labels("renewed" if renewing else "claimed").inc()
        log.debug("task claimed", extra={"task_id": task_id, "worker_id": worker_id, "renewed": renewing})
        assert after.lease_expires_at is not None
        return ClaimAnswer(task=after, lease_expires_at=after.lease_expires_at)

    async def _check_eligible(self, task: Task, codebase: Codebase | None, record: WorkerRecord) -> None:
        view = await self._worker_view(record, for_global=task.codebase_id == GLOBAL_CODEBASE)
        decision = routing.may_run(task, codebase, view)
        if not decision.allowed:
            self.metrics.claims.labels("conflict").inc()
            raise Conflict(decision.reason)

    async def update_status(self, task_id: str, update: TaskStatusUpdate) -> Task:
        worker_id = update.worker_id
        if update.status is TaskStatus.RUNNING:
            # Older workers claim by setting "running"; it is a claim with the same rules.
            answer = await self.claim(task_id, worker_id)
            if update.session_id is None or answer.task.session_id == update.session_id:
                return answer.task
            now = self.clock()
            session_id = update.session_id
            _, after = await self._transition(
                task_id, lambda t: leases.set_session(t, worker_id, session_id, now)
            )
            return after
        return await self._end_claim(
            task_id, worker_id, update.status, update.result, update.error, update.session_id
        )

    async def release(self, request: ReleaseRequest, header_worker_id: str | None) -> Task:
        if header_worker_id and request.worker_id and header_worker_id != request.worker_id:
            raise BadRequest("X-Worker-ID header and worker_id in the body differ")
        worker_id = header_worker_id or request.worker_id
        if not worker_id:
            raise BadRequest("X-Worker-ID header (or worker_id in the body) is required")
        return await self._end_claim(
            request.task_id, worker_id, request.status, request.result, request.error, None
        )

    async def _end_claim(
        self,
        task_id: str,
        worker_id: str,
        status: TaskStatus,
        result: str | None,
        error: str | None,
        session_id: str | None,
    ) -> Task:
        now = self.clock()
        change: TaskChange
        if status is TaskStatus.PENDING:
            change = lambda t: leases.hand_back(t, worker_id, now)  # noqa: E731
        else:
            change = lambda t: leases.finish(  # noqa: E731
                t, worker_id, status, now, result=result, error=error, session_id=session_id
            )
        before, after = await self._transition(task_id, change)
        if leases.became_claimable(before, after):
            await self._announce(after)
        if after is not before:
            log.info(
                "task status",
                extra={"task_id": task_id, "worker_id": worker_id, "status": after.status.value},
            )
        return after

    async def cancel_task(self, task_id: str) -> Task:
        now = self.clock()
        before, after = await self._transition(task_id, lambda t: leases.cancel(t, now))
        self.metrics.tasks_cancelled.labels(before.status.value).inc()
        if before.status is TaskStatus.RUNNING and before.worker_id:
            await self.events.task_cancelled(after, before.worker_id)
        log.info(
            "task cancelled by request",
            extra={"task_id": task_id, "worker_id": before.worker_id, "was": before.status.value},
        )
        return after

    async def append_output(self, task_id: str, worker_id: str, chunk: str) -> None:
        task = await self.get_task(task_id)
        if task.worker_id != worker_id:
            raise Conflict(f"task {task_id} is not held by worker {worker_id}")
        if task.status is TaskStatus.CANCELLED:
            raise Conflict(f"task {task_id} is cancelled: its output is no longer taken")
        await self.store.append_output(task_id, chunk, self.settings.max_output_chars)

    async def get_output(self, task_id: str) -> TaskOutput:
        await self.get_task(task_id)
        return await self.store.get_output(task_id)

    # ------------------------------------------------------------------ leases

    async def sweep_expired_leases(self) -> int:
        """Requeue (or fail) every task whose lease ran out. Safe in several replicas at once."""
        now = self.clock()
        handled = 0
        for task_id in await self.store.expired_task_ids(now):
            changed = await self._try_transition(task_id, lambda t: leases.expire(t, now))
            if changed is None:
                continue
            handled += 1
            if changed.status is TaskStatus.FAILED:
                self.metrics.lease_expiries.labels("failed").inc()
                log.warning(
                    "task failed: lease expired too often",
                    extra={"task_id": task_id, "attempts": changed.attempts},
                )
            else:
                self.metrics.lease_expiries.labels("requeued").inc()
                log.info(
                    "task requeued: lease expired", extra={"task_id": task_id, "attempts": changed.attempts}
                )
                await self._announce(changed)
        return handled

    async def sweep_finished_tasks(self, batch: int = 500) -> int:
        """Delete final tasks (and output) older than the retention. Safe in several replicas at once."""
        now = self.clock()
        cutoff = leases.retention_cutoff(now, self.settings.task_retention_seconds)
        if cutoff is None:
            return 0
        deleted = 0
        for task_id in await self.store.finished_task_ids(cutoff, batch):
            if await self.store.delete_task_if(task_id, lambda t: leases.past_retention(t, cutoff)):
                deleted += 1
        if deleted:
            self.metrics.tasks_deleted.inc(deleted)
            log.info("finished tasks deleted after retention", extra={"deleted": deleted})
        return deleted

    async def run_sweeper(self, stop: asyncio.Event) -> None:
        """Sweep every ``lease_sweep_interval`` until ``stop`` is set (a sweep in progress finishes)."""
        while not stop.is_set():
            try:
                await self.sweep_expired_leases()
            except Exception:
                log.exception("lease sweep failed")
            try:
                await self.sweep_finished_tasks()
            except Exception:
                log.exception("retention sweep failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.lease_sweep_interval)

    # ------------------------------------------------------------------ sessions

    async def _session_codebase(self, codebase_id: str, worker_id: str) -> str:
        if codebase_id == GLOBAL_CODEBASE:
            codebase_id = global_codebase_id(worker_id)
        if await self.store.get_codebase(codebase_id) is None:
            raise NotFound(f"codebase {codebase_id} is not registered")
        return codebase_id

    async def sync_sessions(self, codebase_id: str, body: SessionSync) -> int:
        codebase_id = await self._session_codebase(codebase_id, body.worker_id)
        now = self.clock()
        sessions = [
            Session(codebase_id=codebase_id, worker_id=body.worker_id, synced_at=now, **info.model_dump())
            for info in body.sessions
        ]
        await self.store.upsert_sessions(sessions)
        return len(sessions)

    async def sync_messages(self, codebase_id: str, session_id: str, body: MessageSync) -> int:
        codebase_id = await self._session_codebase(codebase_id, body.worker_id)
        if await self.store.get_session(codebase_id, session_id) is None:
            # Messages may arrive before their session's metadata; keep them under a bare session.
            await self.store.upsert_sessions(
                [
                    Session(
                        id=session_id,
                        codebase_id=codebase_id,
                        worker_id=body.worker_id,
                        synced_at=self.clock(),
                    )
                ]
            )
        messages = [Message(session_id=session_id, **m.model_dump()) for m in body.messages]
        await self.store.upsert_messages(codebase_id, messages)
        return len(messages)

    async def list_sessions(self, codebase_id: str) -> list[Session]:
        await self.get_codebase(codebase_id)
        return await self.store.list_sessions(codebase_id)

    async def list_messages(self, codebase_id: str, session_id: str) -> list[Message]:
        await self.get_codebase(codebase_id)
        if await self.store.get_session(codebase_id, session_id) is None:
            raise NotFound(f"session {session_id} of codebase {codebase_id} does not exist")
        return await self.store.list_messages(codebase_id, session_id)

    # ------------------------------------------------------------------ metrics, health

    async def refresh_gauges(self) -> None:
        counts = await self.store.count_tasks()
        for status in TaskStatus:
            self.metrics.tasks.labels(status.value).set(counts.get(status, 0))
        now = self.clock()
        by_status: dict[WorkerStatus, int] = {}
        for w in await self.store.list_workers():
            state = leases.worker_status(
                w.status, w.last_heartbeat, now, self.settings.worker_offline_seconds
            )
            by_status[state] = by_status.get(state, 0) + 1
        for worker_status in WorkerStatus:
            self.metrics.workers.labels(worker_status.value).set(by_status.get(worker_status, 0))

    # ------------------------------------------------------------------ helpers

    async def _transition(self, task_id: str, change: TaskChange) -> tuple[Task, Task]:
        try:
            return await self.store.transition(task_id, change)
        except TaskNotFound:
            raise NotFound(f"task {task_id} does not exist") from None

    async def _try_transition(self, task_id: str, change: TaskChange) -> Task | None:
        """Apply a change that may have become moot (another replica got there first)."""
        try:
            _, after = await self.store.transition(task_id, change)
        except (TaskNotFound, Conflict):
            return None
        return after

    async def _announce(self, task: Task) -> None:
        codebase = None
        if task.codebase_id != GLOBAL_CODEBASE:
            codebase = await self.store.get_codebase(task.codebase_id)
        await self.events.task_available(task, codebase)


def _worker_sees_change(previous: Codebase | None, current: Codebase) -> bool:
    """Re-registering an unchanged codebase (an operator reconciling) is not news for its worker."""
    if previous is None:
        return True
    fields = ("worker_id", "name", "path", "is_global", "git_url", "git_ref")
    return any(getattr(previous, f) != getattr(current, f) for f in fields)
