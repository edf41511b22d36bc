"""Redis storage: shared by several server replicas (not durable unless Redis persists).

Every document is JSON under ``<prefix>:...``; sorted sets index tasks by status and by lease expiry.
Each change is an optimistic transaction (WATCH the keys read, MULTI/EXEC the writes, retry when
another replica wrote first), so a task is claimed exactly once whatever the number of replicas.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.exceptions import WatchError

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
from codetether_server import leases
from codetether_server.store.base import (
    ClaimInputs,
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

T = TypeVar("T")

_MGET_BATCH = 500


# Scores put sorted sets in queue order (priority first, then age) exactly, to the millisecond:
# one band of 4e12 ms (126 years from 2020) per priority; 2001 bands stay below 2**53.
_EPOCH = datetime(2020, 1, 1, tzinfo=UTC)
_BAND_MS = 4 * 10**12


def order_score(task: Task) -> float:
    age_ms = (task.created_at - _EPOCH) // timedelta(milliseconds=1)  # integer arithmetic: exact
    return float((1000 - task.priority) * _BAND_MS + age_ms)


def _texts(values: Iterable[Any]) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def _text_map(stored: Mapping[bytes | str, bytes | str]) -> dict[str, str]:
    return dict(zip(_texts(stored.keys()), _texts(stored.values()), strict=True))


class RedisStore(Store):
    kind = "redis"
    unavailable_errors = (RedisConnectionError, RedisTimeoutError)

    def __init__(self, url: str, prefix: str) -> None:
        self.prefix = prefix
        self._finished_indexed = False
        self._redis: aioredis.Redis = aioredis.Redis.from_url(
            url, decode_responses=True, socket_connect_timeout=5, health_check_interval=30
        )

    # ------------------------------------------------------------------ keys

    def _k(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def _worker_key(self, worker_id: str) -> str:
        return self._k("worker", worker_id)

    def _completed_key(self, worker_id: str) -> str:
        # A counter beside the worker's document: completing a task increments it without
        # reading (and watching) the worker.
        return self._k("worker", worker_id, "completed")

    def _codebase_key(self, codebase_id: str) -> str:
        return self._k("codebase", codebase_id)

    def _task_key(self, task_id: str) -> str:
        return self._k("task", task_id)

    def _pending_key(self, codebase_id: str) -> str:
        return self._k("tasks", "pending", codebase_id)

    def _status_key(self, status: TaskStatus) -> str:
        return self._k("tasks", "status", status.value)

    def _held_key(self, worker_id: str) -> str:
        return self._k("tasks", "held", worker_id)

    def _finished_key(self) -> str:
        # Final tasks scored by completed_at: what the retention sweep reads.
        return self._k("tasks", "finished")

    # ------------------------------------------------------------------ plumbing

    async def _index_finished_once(self) -> None:
        """Tasks that finished before the finished index existed join it once, so retention sees them."""
        marker = self._k("tasks", "finished", "indexed")
        if await self._redis.exists(marker):
            return
        for status in TaskStatus:
            if not status.is_final:
                continue
            start = 0
            while ids := _texts(
                await self._redis.zrange(self._status_key(status), start, start + _MGET_BATCH - 1)
            ):
                scores = {t.id: t.completed_at.timestamp() for t in await self._tasks(ids) if t.completed_at}
                if scores:
                    await self._redis.zadd(self._finished_key(), scores)
                start += _MGET_BATCH
        # Marked only when complete: a start interrupted half-way indexes again (ZADD is idempotent,
        # so replicas starting together may both do it).
        await self._redis.set(marker, "1")

    async def close(self) -> None:
        await self._redis.aclose()

    async def ping(self) -> None:
        await self._redis.ping()

    async def _optimistic(self, watch: list[str], body: Callable[[Pipeline], Awaitable[T]]) -> T:
        """Run ``body`` under WATCH until no other client touched the watched keys meanwhile.

        ``body`` reads in immediate mode, calls ``pipe.multi()`` and queues its writes; they are
        executed here. It may watch more keys before ``multi()``.
        """
        async with self._redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(*watch)
                    result = await body(pipe)
                    if pipe.explicit_transaction:
                        await pipe.execute()
                    else:
                        await pipe.reset()
                    return result
                except WatchError:
                    continue
                except BaseException:
                    await pipe.reset()
                    raise

    async def _mget(self, keys: list[str]) -> list[str]:
        found: list[str] = []
        for start in range(0, len(keys), _MGET_BATCH):
            values = await self._redis.mget(keys[start : start + _MGET_BATCH])
            found.extend(_texts(v for v in values if v is not None))
        return found

    # ------------------------------------------------------------------ workers

    async def upsert_worker(self, reg: WorkerRegistration, now: datetime) -> WorkerRecord:
        key = self._worker_key(reg.worker_id)

        async def body(pipe: Pipeline) -> WorkerRecord:
            raw, completed = await pipe.mget([key, self._completed_key(reg.worker_id)])
            previous = self._worker(raw, completed) if raw else None
            record = WorkerRecord.from_registration(reg, now, previous)
            pipe.multi()
            pipe.set(key, record.model_dump_json())
            if previous is None:
                pipe.set(self._completed_key(record.id), 0)
            pipe.sadd(self._k("workers"), record.id)
            return record

        return await self._optimistic([key], body)

    @staticmethod
    def _worker(raw: Any, completed: Any) -> WorkerRecord:
        record = WorkerRecord.model_validate_json(raw)
        return record.model_copy(update={"tasks_completed": int(completed or 0)})

    async def get_worker(self, worker_id: str) -> WorkerRecord | None:
        raw, completed = await self._redis.mget([self._worker_key(worker_id), self._completed_key(worker_id)])
        return self._worker(raw, completed) if raw else None

    async def list_workers(self) -> list[WorkerRecord]:
        ids = sorted(_texts(await self._redis.smembers(self._k("workers"))))
        if not ids:
            return []
        values = await self._redis.mget(
            [k for i in ids for k in (self._worker_key(i), self._completed_key(i))]
        )
        return [
            self._worker(raw, completed)
            for raw, completed in zip(values[::2], values[1::2], strict=True)
            if raw
        ]

    async def touch_worker(
        self, worker_id: str, status: WorkerStatus | None, active_tasks: int | None, now: datetime
    ) -> WorkerRecord | None:
        key = self._worker_key(worker_id)

        async def body(pipe: Pipeline) -> WorkerRecord | None:
            raw, completed = await pipe.mget([key, self._completed_key(worker_id)])
            if not raw:
                return None
            record = self._worker(raw, completed).touched(status, active_tasks, now)
            pipe.multi()
            pipe.set(key, record.model_dump_json())
            return record

        return await self._optimistic([key], body)

    async def delete_worker(self, worker_id: str) -> bool:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._worker_key(worker_id))
            pipe.delete(self._completed_key(worker_id))
            pipe.srem(self._k("workers"), worker_id)
            deleted, _, _ = await pipe.execute()
        return bool(deleted)

    # ------------------------------------------------------------------ codebases

    async def upsert_codebase(
        self, upsert: CodebaseUpsert, new_id: str, now: datetime
    ) -> tuple[Codebase, Codebase | None]:
        # Every codebase write bumps this counter, so concurrent upserts of one name serialise.
        version_key = self._k("codebases", "version")

        async def body(pipe: Pipeline) -> tuple[Codebase, Codebase | None]:
            existing: Codebase | None = None
            if upsert.id is not None:
                raw = await pipe.get(self._codebase_key(upsert.id))
                existing = Codebase.model_validate_json(raw) if raw else None
            else:
                ids = _texts(await pipe.smembers(self._k("codebases")))
                for raw in await pipe.mget([self._codebase_key(i) for i in ids]) if ids else []:
                    if raw is None:
                        continue
                    candidate = Codebase.model_validate_json(raw)
                    if candidate.name == upsert.name and candidate.worker_id == upsert.worker_id:
                        existing = candidate
                        break
            codebase = upsert.apply(existing, new_id, now)
            pipe.multi()
            pipe.set(self._codebase_key(codebase.id), codebase.model_dump_json())
            pipe.sadd(self._k("codebases"), codebase.id)
            pipe.incr(version_key)
            return codebase, existing

        return await self._optimistic([version_key], body)

    async def get_codebase(self, codebase_id: str) -> Codebase | None:
        raw = await self._redis.get(self._codebase_key(codebase_id))
        return Codebase.model_validate_json(raw) if raw else None

    async def list_codebases(self, worker_id: str | None = None) -> list[Codebase]:
        ids = _texts(await self._redis.smembers(self._k("codebases")))
        raws = await self._mget([self._codebase_key(i) for i in ids])
        found = [Codebase.model_validate_json(raw) for raw in raws]
        found = [c for c in found if worker_id is None or c.worker_id == worker_id]
        return sorted(found, key=lambda c: (c.created_at, c.id))

    async def delete_codebase(self, codebase_id: str) -> Codebase | None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.getdel(self._codebase_key(codebase_id))
            pipe.srem(self._k("codebases"), codebase_id)
            pipe.incr(self._k("codebases", "version"))
            raw, _, _ = await pipe.execute()
        return Codebase.model_validate_json(raw) if raw else None

    # ------------------------------------------------------------------ tasks

    async def insert_task(self, task: Task) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self._task_key(task.id), task.model_dump_json())
            score = {task.id: order_score(task)}
            pipe.zadd(self._status_key(task.status), score)
            pipe.zadd(self._k("tasks", "all"), score)
            if task.status is TaskStatus.PENDING:
                pipe.zadd(self._pending_key(task.codebase_id), score)
            await pipe.execute()

    async def get_task(self, task_id: str) -> Task | None:
        raw = await self._redis.get(self._task_key(task_id))
        return Task.model_validate_json(raw) if raw else None

    async def list_tasks(self, query: TaskQuery) -> list[Task]:
        if query.worker_id is not None and query.status is TaskStatus.RUNNING:
            ids = _texts(await self._redis.smembers(self._held_key(query.worker_id)))
            return sort_tasks([t for t in await self._tasks(ids) if matches(t, query)])[: query.limit]
        if query.status is TaskStatus.PENDING and query.codebase_ids is not None:
            # Each codebase's pending index is in queue order: its first `limit` are all we can need.
            found: list[Task] = []
            for codebase_id in sorted(query.codebase_ids):
                ids = _texts(await self._redis.zrange(self._pending_key(codebase_id), 0, query.limit - 1))
                found.extend(t for t in await self._tasks(ids) if matches(t, query))
            return sort_tasks(found)[: query.limit]
        # Indexes are in queue order: read pages until `limit` tasks match.
        index = self._status_key(query.status) if query.status else self._k("tasks", "all")
        found = []
        start = 0
        while len(found) < query.limit:
            ids = _texts(await self._redis.zrange(index, start, start + _MGET_BATCH - 1))
            if not ids:
                break
            found.extend(t for t in await self._tasks(ids) if matches(t, query))
            start += _MGET_BATCH
        return sort_tasks(found)[: query.limit]

    async def _tasks(self, ids: list[str]) -> list[Task]:
        return [Task.model_validate_json(raw) for raw in await self._mget([self._task_key(i) for i in ids])]

    async def claim_inputs(self, task_id: str, worker_id: str) -> ClaimInputs:
        worker_raw, completed, task_raw = await self._redis.mget(
            [self._worker_key(worker_id), self._completed_key(worker_id), self._task_key(task_id)]
        )
        task = Task.model_validate_json(task_raw) if task_raw else None
        codebase = None
        if task is not None and task.codebase_id != GLOBAL_CODEBASE:
            codebase = await self.get_codebase(task.codebase_id)
        worker = self._worker(worker_raw, completed) if worker_raw else None
        return ClaimInputs(worker, task, codebase)

    async def transition(self, task_id: str, change: TaskChange) -> tuple[Task, Task]:
        key = self._task_key(task_id)

        async def body(pipe: Pipeline) -> tuple[Task, Task]:
            raw = await pipe.get(key)
            if not raw:
                raise TaskNotFound(task_id)
            before = Task.model_validate_json(raw)
            after = change(before)
            pipe.multi()
            pipe.set(key, after.model_dump_json())
            self._reindex(pipe, before, after)
            completed_now = after.status is TaskStatus.COMPLETED and before.status is not TaskStatus.COMPLETED
            if completed_now and after.worker_id:
                pipe.incr(self._completed_key(after.worker_id))
            return before, after

        return await self._optimistic([key], body)

    def _reindex(self, pipe: Pipeline, before: Task, after: Task) -> None:
        if before.status is not after.status:
            pipe.zrem(self._status_key(before.status), after.id)
            pipe.zadd(self._status_key(after.status), {after.id: order_score(after)})
            if before.status is TaskStatus.PENDING:
                pipe.zrem(self._pending_key(before.codebase_id), after.id)
            if after.status is TaskStatus.PENDING:
                pipe.zadd(self._pending_key(after.codebase_id), {after.id: order_score(after)})
        if before.status is TaskStatus.RUNNING and before.worker_id:
            pipe.srem(self._held_key(before.worker_id), after.id)
        if after.status is TaskStatus.RUNNING and after.lease_expires_at is not None:
            pipe.zadd(self._k("tasks", "leases"), {after.id: after.lease_expires_at.timestamp()})
            if after.worker_id:
                pipe.sadd(self._held_key(after.worker_id), after.id)
        else:
            pipe.zrem(self._k("tasks", "leases"), after.id)
        if after.status.is_final and after.completed_at is not None:
            pipe.zadd(self._finished_key(), {after.id: after.completed_at.timestamp()})
        elif before.status.is_final:
            pipe.zrem(self._finished_key(), after.id)

    async def running_task_ids(self, worker_id: str) -> list[str]:
        return sorted(_texts(await self._redis.smembers(self._held_key(worker_id))))

    async def expired_task_ids(self, now: datetime) -> list[str]:
        return _texts(await self._redis.zrangebyscore(self._k("tasks", "leases"), "-inf", now.timestamp()))

    async def count_tasks(self) -> dict[TaskStatus, int]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for status in TaskStatus:
                pipe.zcard(self._status_key(status))
            counts = await pipe.execute()
        return {status: int(n) for status, n in zip(TaskStatus, counts, strict=True) if n}

    async def finished_task_ids(self, before: datetime, limit: int) -> list[str]:
        if not self._finished_indexed:
            # Here, not at start: a Redis that is down while the server starts must not stop it.
            await self._index_finished_once()
            self._finished_indexed = True
        return _texts(
            await self._redis.zrangebyscore(
                self._finished_key(), "-inf", f"({before.timestamp()}", start=0, num=limit
            )
        )

    async def delete_task_if(self, task_id: str, check: TaskCheck) -> bool:
        key = self._task_key(task_id)

        async def body(pipe: Pipeline) -> bool:
            raw = await pipe.get(key)
            if not raw:
                pipe.multi()
                pipe.zrem(self._finished_key(), task_id)  # a stale index entry
                return False
            task = Task.model_validate_json(raw)
            if not check(task):
                return False
            pipe.multi()
            pipe.delete(key, self._k("output", task_id))
            pipe.zrem(self._status_key(task.status), task_id)
            pipe.zrem(self._k("tasks", "all"), task_id)
            pipe.zrem(self._finished_key(), task_id)
            pipe.zrem(self._pending_key(task.codebase_id), task_id)
            pipe.zrem(self._k("tasks", "leases"), task_id)
            if task.worker_id:
                pipe.srem(self._held_key(task.worker_id), task_id)
            return True

        return await self._optimistic([key], body)

    # ------------------------------------------------------------------ output

    async def append_output(self, task_id: str, chunk: str, limit: int) -> None:
        key = self._k("output", task_id)

        async def body(pipe: Pipeline) -> None:
            stored = _text_map(await pipe.hgetall(key))
            output, cut = leases.append_output(stored.get("output", ""), chunk, limit)
            pipe.multi()
            pipe.hset(
                key, mapping={"output": output, "truncated": int(cut or stored.get("truncated") == "1")}
            )

        await self._optimistic([key], body)

    async def get_output(self, task_id: str) -> TaskOutput:
        stored = _text_map(await self._redis.hgetall(self._k("output", task_id)))
        return TaskOutput(
            task_id=task_id, output=stored.get("output", ""), truncated=stored.get("truncated") == "1"
        )

    # ------------------------------------------------------------------ sessions

    async def upsert_sessions(self, sessions: list[Session]) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            for session in sessions:
                pipe.hset(self._k("sessions", session.codebase_id), session.id, session.model_dump_json())
            await pipe.execute()

    async def list_sessions(self, codebase_id: str) -> list[Session]:
        stored = await self._redis.hgetall(self._k("sessions", codebase_id))
        return sorted((Session.model_validate_json(raw) for raw in stored.values()), key=lambda s: s.id)

    async def get_session(self, codebase_id: str, session_id: str) -> Session | None:
        raw = await self._redis.hget(self._k("sessions", codebase_id), session_id)
        return Session.model_validate_json(raw) if raw else None

    async def upsert_messages(self, codebase_id: str, messages: list[Message]) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            for message in messages:
                key = self._k("messages", codebase_id, message.session_id)
                pipe.hset(key, message.id, message.model_dump_json())
            await pipe.execute()

    async def list_messages(self, codebase_id: str, session_id: str) -> list[Message]:
        stored = await self._redis.hgetall(self._k("messages", codebase_id, session_id))
        return sorted((Message.model_validate_json(raw) for raw in stored.values()), key=message_order)
