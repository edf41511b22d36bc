"""Publish task events on Redis pub/sub (channels: ``codetether_contract.events``).

An event is a hint that something became claimable; the claim decides. Publishing never fails a
request: when Redis is down the event is dropped (workers poll as a fallback) and a warning logged.
"""

from __future__ import annotations

import logging
import time

import redis.asyncio as aioredis

from codetether_contract.events import EventType, TaskEvent, worker_channel
from codetether_contract.models import Codebase, Task
from codetether_server import routing
from codetether_server.metrics import Metrics

log = logging.getLogger("codetether_server.events")

SUSPEND_AFTER_FAILURE_SECONDS = 1.0


class EventPublisher:
    """Publishes to Redis when a URL is given; otherwise does nothing."""

    def __init__(self, redis_url: str, prefix: str, metrics: Metrics | None = None) -> None:
        self.prefix = prefix
        self._metrics = metrics
        self._redis: aioredis.Redis | None = (
            aioredis.Redis.from_url(redis_url, socket_connect_timeout=1, socket_timeout=1)
            if redis_url
            else None
        )
        self.published = 0
        self.dropped = 0
        self._last_warning = 0.0
        self._suspended_until = 0.0

    @property
    def enabled(self) -> bool:
        return self._redis is not None

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()

    async def publish(self, channel: str, event: TaskEvent) -> None:
        if self._redis is None:
            return
        if time.monotonic() < self._suspended_until:
            # Redis failed a moment ago: do not make every request wait on it again.
            self._drop()
            return
        try:
            await self._redis.publish(channel, event.model_dump_json(exclude_none=True))
            self.published += 1
            if self._metrics is not None:
                self._metrics.events.labels("published").inc()
        except Exception as exc:  # a lost hint is not worth a failed request
            self._drop()
            now = time.monotonic()
            self._suspended_until = now + SUSPEND_AFTER_FAILURE_SECONDS
            if now - self._last_warning > 30:
                self._last_warning = now
                log.warning("event not published", extra={"channel": channel, "error": repr(exc)})

    def _drop(self) -> None:
        self.dropped += 1
        if self._metrics is not None:
            self._metrics.events.labels("dropped").inc()

    async def task_available(self, task: Task, codebase: Codebase | None) -> None:
        channel = routing.task_channel(task, codebase, self.prefix)
        if channel is None:
            return
        event = TaskEvent(
            event=EventType.TASK_AVAILABLE,
            task_id=task.id,
            codebase_id=task.codebase_id,
            worker_id=routing.task_target(task, codebase),
            required_capabilities=sorted(routing.required_capabilities(task)),
            priority=task.priority,
            created_at=task.created_at,
        )
        await self.publish(channel, event)

    async def task_cancelled(self, task: Task, worker_id: str) -> None:
        """Tell the worker holding a task that it was cancelled, so it stops the agent at once."""
        event = TaskEvent(
            event=EventType.TASK_CANCELLED, task_id=task.id, codebase_id=task.codebase_id, worker_id=worker_id
        )
        await self.publish(worker_channel(worker_id, self.prefix), event)

    async def codebase_changed(self, event_type: EventType, codebase: Codebase, worker_id: str) -> None:
        event = TaskEvent(event=event_type, codebase_id=codebase.id, worker_id=worker_id)
        await self.publish(worker_channel(worker_id, self.prefix), event)
