"""PostgreSQL storage: durable, shared by several server replicas.

Task changes run in a transaction holding the task's row lock (``SELECT ... FOR UPDATE``), so a
task is claimed exactly once across replicas and the lease sweeper of every replica can run at the
same time. The schema is created and migrated at start under an advisory lock, so replicas starting
together do not race.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection, OperationalError
from psycopg.rows import DictRow, dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, PoolTimeout

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
    ClaimInputs,
    CodebaseUpsert,
    Store,
    TaskChange,
    TaskCheck,
    TaskNotFound,
    TaskQuery,
    WorkerRecord,
)

log = logging.getLogger("codetether_server.postgres")

# Any constant: the key of the advisory lock that serialises migrations.
MIGRATION_LOCK_KEY = 0x43545352  # "CTSR"

MIGRATIONS: tuple[str, ...] = (
    # 1: everything the server keeps.
    """
    CREATE TABLE workers (
        id text PRIMARY KEY,
        name text NOT NULL,
        hostname text NOT NULL DEFAULT '',
        capabilities jsonb NOT NULL DEFAULT '[]',
        codebases jsonb NOT NULL DEFAULT '[]',
        global_codebase_id text,
        max_concurrent_tasks integer NOT NULL DEFAULT 1,
        version text NOT NULL DEFAULT '',
        status text NOT NULL,
        active_tasks integer NOT NULL DEFAULT 0,
        tasks_completed integer NOT NULL DEFAULT 0,
        last_heartbeat timestamptz NOT NULL,
        registered_at timestamptz NOT NULL
    );
    CREATE TABLE codebases (
        id text PRIMARY KEY,
        name text NOT NULL,
        path text NOT NULL,
        description text NOT NULL DEFAULT '',
        worker_id text,
        is_global boolean NOT NULL DEFAULT false,
        git_url text,
        git_ref text,
        created_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL
    );
    CREATE INDEX codebases_worker ON codebases (worker_id);
    CREATE INDEX codebases_name ON codebases (name, worker_id);
    CREATE TABLE tasks (
        id text PRIMARY KEY,
        title text NOT NULL,
        prompt text NOT NULL,
        agent_type text NOT NULL,
        codebase_id text NOT NULL,
        priority integer NOT NULL DEFAULT 0,
        metadata jsonb NOT NULL DEFAULT '{}',
        model text,
        status text NOT NULL,
        worker_id text,
        session_id text,
        result text,
        error text,
        attempts integer NOT NULL DEFAULT 0,
        max_attempts integer NOT NULL,
        created_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL,
        started_at timestamptz,
        completed_at timestamptz,
        lease_expires_at timestamptz
    );
    CREATE INDEX tasks_queue ON tasks (status, priority DESC, created_at, id);
    CREATE INDEX tasks_holder ON tasks (worker_id) WHERE status = 'running';
    CREATE INDEX tasks_leases ON tasks (lease_expires_at) WHERE status = 'running';
    CREATE TABLE task_outputs (
        task_id text PRIMARY KEY,
        output text NOT NULL DEFAULT '',
        truncated boolean NOT NULL DEFAULT false
    );
    CREATE TABLE sessions (
        codebase_id text NOT NULL,
        id text NOT NULL,
        worker_id text NOT NULL,
        title text NOT NULL DEFAULT '',
        created_at timestamptz,
        updated_at timestamptz,
        agent_type text,
        task_id text,
        message_count integer NOT NULL DEFAULT 0,
        metadata jsonb NOT NULL DEFAULT '{}',
        synced_at timestamptz NOT NULL,
        PRIMARY KEY (codebase_id, id)
    );
    CREATE TABLE messages (
        codebase_id text NOT NULL,
        session_id text NOT NULL,
        id text NOT NULL,
        role text NOT NULL,
        created_at timestamptz,
        summary text NOT NULL DEFAULT '',
        tool_usage jsonb NOT NULL DEFAULT '{}',
        PRIMARY KEY (codebase_id, session_id, id)
    );
    """,
    # 2: the retention sweep finds finished tasks by age.
    """
    CREATE INDEX tasks_finished ON tasks (completed_at)
        WHERE status IN ('completed', 'failed', 'cancelled');
    """,
)

TASK_COLUMNS = (
    "id",
    "title",
    "prompt",
    "agent_type",
    "codebase_id",
    "priority",
    "metadata",
    "model",
    "status",
    "worker_id",
    "session_id",
    "result",
    "error",
    "attempts",
    "max_attempts",
    "created_at",
    "updated_at",
    "started_at",
    "completed_at",
    "lease_expires_at",
)
WORKER_COLUMNS = tuple(WorkerRecord.model_fields)
CODEBASE_COLUMNS = tuple(Codebase.model_fields)
SESSION_COLUMNS = tuple(Session.model_fields)
MESSAGE_COLUMNS = ("codebase_id", "session_id", "id", "role", "created_at", "summary", "tool_usage")

_JSON_COLUMNS = {"capabilities", "codebases", "metadata", "tool_usage"}


def _row_values(columns: tuple[str, ...], data: dict[str, Any]) -> list[Any]:
    return [Jsonb(data[c]) if c in _JSON_COLUMNS else data[c] for c in columns]


def _insert(table: str, columns: tuple[str, ...], conflict: str, update: tuple[str, ...]) -> str:
    placeholders = ", ".join(["%s"] * len(columns))
    sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in update)
    action = f"DO UPDATE SET {sets}" if update else "DO NOTHING"
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders}) ON CONFLICT ({conflict}) {action}"


_TASK_SELECT = f"SELECT {', '.join(TASK_COLUMNS)} FROM tasks"
_TASK_UPDATE = (
    "UPDATE tasks SET " + ", ".join(f"{c} = %s" for c in TASK_COLUMNS if c != "id") + " WHERE id = %s"
)
_WORKER_UPSERT = _insert(
    "workers", WORKER_COLUMNS, "id", tuple(c for c in WORKER_COLUMNS if c not in ("id", "registered_at"))
)
_CODEBASE_UPSERT = _insert(
    "codebases", CODEBASE_COLUMNS, "id", tuple(c for c in CODEBASE_COLUMNS if c != "id")
)
_SESSION_UPSERT = _insert(
    "sessions",
    SESSION_COLUMNS,
    "codebase_id, id",
    tuple(c for c in SESSION_COLUMNS if c not in ("id", "codebase_id")),
)
_MESSAGE_UPSERT = _insert(
    "messages",
    MESSAGE_COLUMNS,
    "codebase_id, session_id, id",
    ("role", "created_at", "summary", "tool_usage"),
)


class PostgresStore(Store):
    kind = "postgres"
    unavailable_errors = (OperationalError, PoolTimeout)

    def __init__(self, url: str, pool_size: int = 10) -> None:
        self.url = url
        self._pool: AsyncConnectionPool[AsyncConnection[DictRow]] = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            open=False,
            kwargs={"autocommit": True, "row_factory": dict_row},
            connection_class=AsyncConnection[DictRow],
            name="codetether",
        )

    async def start(self) -> None:
        await self._pool.open(wait=True, timeout=30)
        await self.migrate()

    async def close(self) -> None:
        await self._pool.close()

    async def migrate(self) -> int:
        """Bring the schema to the newest version; returns it. Safe when replicas start together."""
        async with self._pool.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
            await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
            row = await (await conn.execute("SELECT max(version) AS v FROM schema_version")).fetchone()
            current = int(row["v"]) if row and row["v"] is not None else 0
            for version, sql in enumerate(MIGRATIONS, start=1):
                if version <= current:
                    continue
                await conn.execute(sql)  # trusted, multi-statement DDL
                await conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
                log.info("schema migrated", extra={"version": version})
            return max(current, len(MIGRATIONS))

    async def ping(self) -> None:
        async with self._pool.connection(timeout=5) as conn:
            await conn.execute("SELECT 1")

    async def _one(self, sql: str, params: tuple[Any, ...] = ()) -> DictRow | None:
        async with self._pool.connection() as conn:
            return await (await conn.execute(sql, params)).fetchone()

    async def _all(self, sql: str, params: tuple[Any, ...] = ()) -> list[DictRow]:
        async with self._pool.connection() as conn:
            return await (await conn.execute(sql, params)).fetchall()

    # ------------------------------------------------------------------ workers

    async def upsert_worker(self, reg: WorkerRegistration, now: datetime) -> WorkerRecord:
        async with self._pool.connection() as conn, conn.transaction():
            row = await (
                await conn.execute("SELECT * FROM workers WHERE id = %s FOR UPDATE", (reg.worker_id,))
            ).fetchone()
            previous = WorkerRecord.model_validate(row) if row else None
            record = WorkerRecord.from_registration(reg, now, previous)
            await conn.execute(_WORKER_UPSERT, _row_values(WORKER_COLUMNS, record.model_dump()))
            return record

    async def get_worker(self, worker_id: str) -> WorkerRecord | None:
        row = await self._one("SELECT * FROM workers WHERE id = %s", (worker_id,))
        return WorkerRecord.model_validate(row) if row else None

    async def list_workers(self) -> list[WorkerRecord]:
        return [WorkerRecord.model_validate(r) for r in await self._all("SELECT * FROM workers ORDER BY id")]

    async def touch_worker(
        self, worker_id: str, status: WorkerStatus | None, active_tasks: int | None, now: datetime
    ) -> WorkerRecord | None:
        async with self._pool.connection() as conn, conn.transaction():
            row = await (
                await conn.execute("SELECT * FROM workers WHERE id = %s FOR UPDATE", (worker_id,))
            ).fetchone()
            if row is None:
                return None
            record = WorkerRecord.model_validate(row).touched(status, active_tasks, now)
            await conn.execute(
                "UPDATE workers SET status = %s, active_tasks = %s, last_heartbeat = %s WHERE id = %s",
                (record.status.value, record.active_tasks, record.last_heartbeat, worker_id),
            )
            return record

    async def delete_worker(self, worker_id: str) -> bool:
        row = await self._one("DELETE FROM workers WHERE id = %s RETURNING id", (worker_id,))
        return row is not None

    # ------------------------------------------------------------------ codebases

    async def upsert_codebase(
        self, upsert: CodebaseUpsert, new_id: str, now: datetime
    ) -> tuple[Codebase, Codebase | None]:
        async with self._pool.connection() as conn, conn.transaction():
            if upsert.id is not None:
                lock_key = f"codebase:{upsert.id}"
                query, params = "SELECT * FROM codebases WHERE id = %s FOR UPDATE", (upsert.id,)
            else:
                lock_key = f"codebase-name:{upsert.name}:{upsert.worker_id or ''}"
                query = (
                    "SELECT * FROM codebases WHERE name = %s AND worker_id IS NOT DISTINCT FROM %s "
                    "ORDER BY created_at LIMIT 1 FOR UPDATE"
                )
                params = (upsert.name, upsert.worker_id)  # type: ignore[assignment]
            # Row locks cannot cover a row that does not exist yet: serialise on the key instead.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (lock_key,))
            row = await (await conn.execute(query, params)).fetchone()
            existing = Codebase.model_validate(row) if row else None
            codebase = upsert.apply(existing, new_id, now)
            await conn.execute(_CODEBASE_UPSERT, _row_values(CODEBASE_COLUMNS, codebase.model_dump()))
            return codebase, existing

    async def get_codebase(self, codebase_id: str) -> Codebase | None:
        row = await self._one("SELECT * FROM codebases WHERE id = %s", (codebase_id,))
        return Codebase.model_validate(row) if row else None

    async def list_codebases(self, worker_id: str | None = None) -> list[Codebase]:
        if worker_id is None:
            rows = await self._all("SELECT * FROM codebases ORDER BY created_at, id")
        else:
            rows = await self._all(
                "SELECT * FROM codebases WHERE worker_id = %s ORDER BY created_at, id", (worker_id,)
            )
        return [Codebase.model_validate(r) for r in rows]

    async def delete_codebase(self, codebase_id: str) -> Codebase | None:
        row = await self._one("DELETE FROM codebases WHERE id = %s RETURNING *", (codebase_id,))
        return Codebase.model_validate(row) if row else None

    # ------------------------------------------------------------------ tasks

    async def insert_task(self, task: Task) -> None:
        sql = (
            f"INSERT INTO tasks ({', '.join(TASK_COLUMNS)}) VALUES ({', '.join(['%s'] * len(TASK_COLUMNS))})"
        )
        async with self._pool.connection() as conn:
            await conn.execute(sql, _row_values(TASK_COLUMNS, task.model_dump()))

    async def get_task(self, task_id: str) -> Task | None:
        row = await self._one(f"{_TASK_SELECT} WHERE id = %s", (task_id,))
        return Task.model_validate(row) if row else None

    async def list_tasks(self, query: TaskQuery) -> list[Task]:
        where: list[str] = []
        params: list[Any] = []
        if query.status is not None:
            where.append("status = %s")
            params.append(query.status.value)
        if query.codebase_ids is not None:
            where.append("codebase_id = ANY(%s)")
            params.append(list(query.codebase_ids))
        if query.worker_id is not None:
            where.append("worker_id = %s")
            params.append(query.worker_id)
        sql = _TASK_SELECT
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY priority DESC, created_at, id LIMIT %s"
        params.append(query.limit)
        return [Task.model_validate(r) for r in await self._all(sql, tuple(params))]

    async def claim_inputs(self, task_id: str, worker_id: str) -> ClaimInputs:
        row = await self._one(
            """
            SELECT
                (SELECT to_jsonb(w) FROM workers w WHERE w.id = %(worker)s) AS worker,
                (SELECT to_jsonb(t) FROM tasks t WHERE t.id = %(task)s) AS task,
                (SELECT to_jsonb(c) FROM codebases c
                  WHERE c.id = (SELECT codebase_id FROM tasks WHERE id = %(task)s)) AS codebase
            """,
            {"worker": worker_id, "task": task_id},  # type: ignore[arg-type]
        )
        assert row is not None
        return ClaimInputs(
            worker=WorkerRecord.model_validate(row["worker"]) if row["worker"] else None,
            task=Task.model_validate(row["task"]) if row["task"] else None,
            codebase=Codebase.model_validate(row["codebase"]) if row["codebase"] else None,
        )

    async def transition(self, task_id: str, change: TaskChange) -> tuple[Task, Task]:
        async with self._pool.connection() as conn, conn.transaction():
            row = await (
                await conn.execute(f"{_TASK_SELECT} WHERE id = %s FOR UPDATE", (task_id,))
            ).fetchone()
            if row is None:
                raise TaskNotFound(task_id)
            before = Task.model_validate(row)
            after = change(before)
            if after is before:
                return before, after
            values = _row_values(TASK_COLUMNS, after.model_dump())
            await conn.execute(_TASK_UPDATE, [*values[1:], task_id])
            if after.status is TaskStatus.COMPLETED and before.status is not TaskStatus.COMPLETED:
                await conn.execute(
                    "UPDATE workers SET tasks_completed = tasks_completed + 1 WHERE id = %s",
                    (after.worker_id,),
                )
            return before, after

    async def running_task_ids(self, worker_id: str) -> list[str]:
        rows = await self._all(
            "SELECT id FROM tasks WHERE status = 'running' AND worker_id = %s ORDER BY id", (worker_id,)
        )
        return [r["id"] for r in rows]

    async def expired_task_ids(self, now: datetime) -> list[str]:
        rows = await self._all(
            "SELECT id FROM tasks WHERE status = 'running' AND lease_expires_at <= %s ORDER BY lease_expires_at",
            (now,),
        )
        return [r["id"] for r in rows]

    async def count_tasks(self) -> dict[TaskStatus, int]:
        rows = await self._all("SELECT status, count(*) AS n FROM tasks GROUP BY status")
        return {TaskStatus(r["status"]): int(r["n"]) for r in rows}

    async def finished_task_ids(self, before: datetime, limit: int) -> list[str]:
        rows = await self._all(
            "SELECT id FROM tasks WHERE status IN ('completed', 'failed', 'cancelled') "
            "AND completed_at < %s ORDER BY completed_at, id LIMIT %s",
            (before, limit),
        )
        return [r["id"] for r in rows]

    async def delete_task_if(self, task_id: str, check: TaskCheck) -> bool:
        async with self._pool.connection() as conn, conn.transaction():
            # SKIP LOCKED: a row another replica is deleting (or a worker is changing) waits for the
            # next sweep instead of holding this one up.
            row = await (
                await conn.execute(f"{_TASK_SELECT} WHERE id = %s FOR UPDATE SKIP LOCKED", (task_id,))
            ).fetchone()
            if row is None or not check(Task.model_validate(row)):
                return False
            await conn.execute("DELETE FROM task_outputs WHERE task_id = %s", (task_id,))
            await conn.execute("DELETE FROM tasks WHERE id = %s", (task_id,))
            return True

    # ------------------------------------------------------------------ output

    async def append_output(self, task_id: str, chunk: str, limit: int) -> None:
        # One statement: concurrent appends serialise on the row, and only the newest `limit`
        # characters are kept.
        await self._one(
            """
            INSERT INTO task_outputs AS o (task_id, output, truncated)
            VALUES (%(id)s, right(%(chunk)s, %(limit)s), char_length(%(chunk)s) > %(limit)s)
            ON CONFLICT (task_id) DO UPDATE SET
                output = right(o.output || %(chunk)s, %(limit)s),
                truncated = o.truncated OR char_length(o.output) + char_length(%(chunk)s) > %(limit)s
            RETURNING task_id
            """,
            {"id": task_id, "chunk": chunk, "limit": limit},  # type: ignore[arg-type]
        )

    async def get_output(self, task_id: str) -> TaskOutput:
        row = await self._one("SELECT output, truncated FROM task_outputs WHERE task_id = %s", (task_id,))
        if row is None:
            return TaskOutput(task_id=task_id, output="")
        return TaskOutput(task_id=task_id, output=row["output"], truncated=row["truncated"])

    # ------------------------------------------------------------------ sessions

    async def upsert_sessions(self, sessions: list[Session]) -> None:
        if not sessions:
            return
        async with self._pool.connection() as conn, conn.cursor() as cur:
            await cur.executemany(
                _SESSION_UPSERT,
                [_row_values(SESSION_COLUMNS, s.model_dump()) for s in sessions],
            )

    async def list_sessions(self, codebase_id: str) -> list[Session]:
        rows = await self._all("SELECT * FROM sessions WHERE codebase_id = %s ORDER BY id", (codebase_id,))
        return [Session.model_validate(r) for r in rows]

    async def get_session(self, codebase_id: str, session_id: str) -> Session | None:
        row = await self._one(
            "SELECT * FROM sessions WHERE codebase_id = %s AND id = %s", (codebase_id, session_id)
        )
        return Session.model_validate(row) if row else None

    async def upsert_messages(self, codebase_id: str, messages: list[Message]) -> None:
        if not messages:
            return
        async with self._pool.connection() as conn, conn.cursor() as cur:
            await cur.executemany(
                _MESSAGE_UPSERT,
                [
                    _row_values(MESSAGE_COLUMNS, {"codebase_id": codebase_id, **m.model_dump()})
                    for m in messages
                ],
            )

    async def list_messages(self, codebase_id: str, session_id: str) -> list[Message]:
        rows = await self._all(
            "SELECT session_id, id, role, created_at, summary, tool_usage FROM messages "
            "WHERE codebase_id = %s AND session_id = %s ORDER BY created_at NULLS FIRST, id",
            (codebase_id, session_id),
        )
        return [Message.model_validate(r) for r in rows]


_ = leases  # the rules applied in transition() come from callers; imported for the reader's map
