"""Task events on Redis pub/sub: channel names and the event body.

The server publishes one event whenever a task becomes claimable (created, handed back, requeued
after a lease expired), whenever a codebase is assigned to or removed from a worker, and when a
running task is cancelled by request (``task.cancelled`` on the holding worker's channel). Pub/sub keeps
no backlog, so a worker that (re)connects polls once; an event is a hint, the claim decides.

Channels, with the default prefix ``codetether``:

* ``codetether:tasks:worker:<worker_id>`` -- tasks for codebases pinned to that worker (affinity),
  ``codebase.*`` events and ``task.cancelled`` for tasks that worker holds;
* ``codetether:tasks:global`` -- tasks with ``codebase_id: "global"``, for workers that registered a
  global codebase;
* ``codetether:tasks:shared`` -- tasks for codebases registered without a ``worker_id``.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_PREFIX = "codetether"


class EventType(StrEnum):
    TASK_AVAILABLE = "task.available"
    CODEBASE_ASSIGNED = "codebase.assigned"
    CODEBASE_REMOVED = "codebase.removed"
    TASK_CANCELLED = "task.cancelled"


def worker_channel(worker_id: str, prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}:tasks:worker:{worker_id}"


def global_channel(prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}:tasks:global"


def shared_channel(prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}:tasks:shared"


def channels_for_worker(worker_id: str, *, serves_global: bool, prefix: str = DEFAULT_PREFIX) -> list[str]:
    """Every channel a worker listens on."""
    channels = [worker_channel(worker_id, prefix), shared_channel(prefix)]
    if serves_global:
        channels.append(global_channel(prefix))
    return channels


class TaskEvent(BaseModel):
    """Body of every message on the task channels (JSON)."""

    model_config = ConfigDict(extra="ignore")

    event: EventType
    task_id: str | None = None
    codebase_id: str | None = None
    worker_id: str | None = Field(default=None, description="Target worker of a pinned task or codebase")
    required_capabilities: list[str] = Field(default_factory=list)
    priority: int = 0
    created_at: datetime | None = Field(default=None, description="When the task was created")
