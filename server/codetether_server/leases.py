"""Claims are leases. The rules of who holds a task, and what happens when a lease runs out.

Each function takes the task as stored and returns the task to store, or raises ``Conflict``. Every
storage backend applies them inside its own atomic step (a lock, a Redis transaction, a row lock), so
the rules live here once and behave the same everywhere. Pure: no I/O, time is passed in.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from codetether_contract.models import MAX_RESULT_CHARS, Task, TaskStatus, WorkerStatus
from codetether_server.errors import Conflict

TRUNCATION_SUFFIX = "\n[truncated by the server]"
CANCELLED_BY_REQUEST = "cancelled by request"


def lease_until(now: datetime, lease_seconds: float) -> datetime:
    return now + timedelta(seconds=lease_seconds)


def bound_text(value: str | None, limit: int = MAX_RESULT_CHARS) -> str | None:
    """Results and errors are bounded; a cut one ends with a visible marker."""
    if value is None or len(value) <= limit:
        return value
    return value[: limit - len(TRUNCATION_SUFFIX)] + TRUNCATION_SUFFIX


def claim(task: Task, worker_id: str, now: datetime, until: datetime) -> Task:
    """Pending -> running for ``worker_id``; the holder claiming again renews its lease."""
    if task.status is TaskStatus.PENDING:
        return task.model_copy(
            update={
                "status": TaskStatus.RUNNING,
                "worker_id": worker_id,
                "started_at": now,
                "updated_at": now,
                "lease_expires_at": until,
                "completed_at": None,
            }
        )
    if task.status is TaskStatus.RUNNING and task.worker_id == worker_id:
        return renew(task, worker_id, now, until)
    if task.status is TaskStatus.RUNNING:
        raise Conflict(f"task {task.id} is already claimed by another worker")
    raise Conflict(f"task {task.id} is {task.status.value}")


def renew(task: Task, worker_id: str, now: datetime, until: datetime) -> Task:
    if task.status is not TaskStatus.RUNNING or task.worker_id != worker_id:
        raise Conflict(f"task {task.id} is not held by worker {worker_id}")
    return task.model_copy(update={"lease_expires_at": until, "updated_at": now})


def hand_back(task: Task, worker_id: str, now: datetime) -> Task:
    """The holder gives the task up unfinished: pending again at once, no attempt counted."""
    _require_holder(task, worker_id)
    return task.model_copy(
        update={
            "status": TaskStatus.PENDING,
            "worker_id": None,
            "lease_expires_at": None,
            "started_at": None,
            "updated_at": now,
        }
    )


def finish(
    task: Task,
    worker_id: str,
    status: TaskStatus,
    now: datetime,
    *,
    result: str | None = None,
    error: str | None = None,
    session_id: str | None = None,
) -> Task:
    """Record a final status. Only the holder may; repeating the same outcome is idempotent.

    A pending task (nobody holds it) may be cancelled by anyone.
    """
    if not status.is_final:
        raise ValueError(f"{status} is not a final status")
    if task.status.is_final:
        if task.status is status and task.worker_id == worker_id:
            return task
        raise Conflict(f"task {task.id} is already {task.status.value}")
    if task.status is TaskStatus.PENDING and status is not TaskStatus.CANCELLED:
        raise Conflict(f"task {task.id} is pending: claim it before reporting {status.value}")
    if task.status is TaskStatus.RUNNING:
        _require_holder(task, worker_id)
    update: dict[str, object] = {
        "status": status,
        "lease_expires_at": None,
        "completed_at": now,
        "updated_at": now,
        "result": bound_text(result) if result is not None else task.result,
        "error": bound_text(error) if error is not None else task.error,
    }
    if task.status is TaskStatus.PENDING:
        update["worker_id"] = worker_id
    if session_id is not None:
        update["session_id"] = session_id
    return task.model_copy(update=update)


def cancel(task: Task, now: datetime) -> Task:
    """An administrator ends the task: pending or running -> cancelled; a final task stays as it is.

    A running task keeps its ``worker_id``, so the holder learns (event or lease check) that the task
    ended on someone else's word, and its later reports get 409 instead of resurrecting it.
    """
    if task.status.is_final:
        raise Conflict(
            f"task {task.id} is already {task.status.value}: only pending or running tasks can be cancelled"
        )
    return task.model_copy(
        update={
            "status": TaskStatus.CANCELLED,
            "lease_expires_at": None,
            "completed_at": now,
            "updated_at": now,
            "error": CANCELLED_BY_REQUEST,
        }
    )


def retention_cutoff(now: datetime, retention_seconds: float) -> datetime | None:
    """Tasks finished before the answer are deleted; None: keep finished tasks forever (retention 0)."""
    if retention_seconds <= 0:
        return None
    return now - timedelta(seconds=retention_seconds)


def past_retention(task: Task, cutoff: datetime) -> bool:
    """A final task that finished before ``cutoff``: it goes, with its output."""
    return task.status.is_final and task.completed_at is not None and task.completed_at < cutoff


def set_session(task: Task, worker_id: str, session_id: str, now: datetime) -> Task:
    _require_holder(task, worker_id)
    return task.model_copy(update={"session_id": session_id, "updated_at": now})


def is_expired(task: Task, now: datetime) -> bool:
    return (
        task.status is TaskStatus.RUNNING
        and task.lease_expires_at is not None
        and task.lease_expires_at <= now
    )


def expire(task: Task, now: datetime) -> Task:
    """The holder vanished: back to pending with one more attempt, or failed after ``max_attempts``."""
    if not is_expired(task, now):
        raise Conflict(f"task {task.id} has no expired lease")
    attempts = task.attempts + 1
    if attempts >= task.max_attempts:
        return task.model_copy(
            update={
                "status": TaskStatus.FAILED,
                "attempts": attempts,
                "lease_expires_at": None,
                "completed_at": now,
                "updated_at": now,
                "error": (
                    f"lease expired {attempts} times (max_attempts={task.max_attempts}); "
                    f"last held by worker {task.worker_id}"
                ),
            }
        )
    return task.model_copy(
        update={
            "status": TaskStatus.PENDING,
            "attempts": attempts,
            "worker_id": None,
            "lease_expires_at": None,
            "started_at": None,
            "updated_at": now,
        }
    )


def became_claimable(before: Task | None, after: Task) -> bool:
    """Did this change make the task claimable (worth an event)?"""
    return after.status is TaskStatus.PENDING and (before is None or before.status is not TaskStatus.PENDING)


def append_output(existing: str, chunk: str, limit: int) -> tuple[str, bool]:
    """Append and keep the newest ``limit`` characters; the flag says whether anything was dropped."""
    combined = existing + chunk
    if len(combined) <= limit:
        return combined, False
    return combined[-limit:], True


def worker_status(
    reported: WorkerStatus, last_heartbeat: datetime, now: datetime, offline_seconds: float
) -> WorkerStatus:
    if (now - last_heartbeat).total_seconds() > offline_seconds:
        return WorkerStatus.OFFLINE
    return reported


def _require_holder(task: Task, worker_id: str) -> None:
    if task.status is not TaskStatus.RUNNING:
        raise Conflict(f"task {task.id} is {task.status.value}, not running")
    if task.worker_id != worker_id:
        raise Conflict(f"task {task.id} is held by another worker, not {worker_id}")
