"""Which tasks might this worker claim? Redis events when available, polling otherwise.

Both paths only produce *candidates*: task ids in a deduplicated queue. An event or a poll answer is
a hint; the claim decides (409 = someone else got it or it is not ours to run).

* Reactive: subscribe to the server's channels for this worker (its own, the shared one, and the
  global one when it serves global tasks). Pub/sub keeps no backlog, so every (re)connect polls once.
* Polling: ``GET /v1/agent/tasks?status=pending&worker_id=<me>`` every ``poll_interval`` while Redis
  is not configured or not reachable; a slow safety poll keeps running in reactive mode too.
* Redis lost: switch to polling at once, reconnect with capped exponential backoff, switch back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import OrderedDict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.exceptions import RedisError

from codetether_contract.client import ApiError, CodetetherClient, ServerUnavailableError
from codetether_contract.events import EventType, TaskEvent, channels_for_worker, global_channel
from codetether_contract.models import Task, TaskStatus
from codetether_worker.aio import wait_event
from codetether_worker.health import WorkerMetrics

log = logging.getLogger(__name__)

REDIS_BACKOFF_BASE = 0.5
REDIS_BACKOFF_CAP = 5.0
SERVER_PROBLEMS: tuple[type[Exception], ...] = (ServerUnavailableError, ApiError, ValueError)
"""What a call to the server can raise: unreachable, an error status, or an answer we cannot read."""
SAFETY_POLLS_EVERY = 6
"""Reactive mode still polls, every 6 poll intervals (at most a minute): an event lost in a gap
nobody noticed, or a Redis the server does not publish to, cannot strand a task."""
SEEN_LIMIT = 10_000
EVENT_GRACE_SECONDS = 2.0
"""A task this much older than our subscription that no event told us about means events are missing."""


def safety_poll_interval(poll_interval: float) -> float:
    return max(poll_interval, min(60.0, SAFETY_POLLS_EVERY * poll_interval))


def missed_by_events(
    tasks: Iterable[Task], known: Callable[[str], bool], subscribed_at: datetime, now: datetime
) -> list[str]:
    """Pending tasks created while we were subscribed that no event announced: events are not arriving.

    ``known`` says whether an event announced a task. Only tasks older than a grace period count, so
    a poll racing an event in flight is no evidence.
    """
    grace = timedelta(seconds=EVENT_GRACE_SECONDS)
    return [task.id for task in tasks if not known(task.id) and subscribed_at < task.created_at < now - grace]


def reconnect_delay(attempt: int, base: float = REDIS_BACKOFF_BASE, cap: float = REDIS_BACKOFF_CAP) -> float:
    """Capped exponential backoff with jitter in [50 %, 100 %] of the step."""
    step = min(cap, base * (2 ** min(attempt, 20)))
    return step * random.uniform(0.5, 1.0)


class CandidateQueue:
    """Task ids that may be claimable, oldest hint first, each id at most once."""

    def __init__(self) -> None:
        self._items: OrderedDict[str, None] = OrderedDict()
        self._available = asyncio.Event()

    def add(self, task_id: str) -> bool:
        if task_id in self._items:
            return False
        self._items[task_id] = None
        self._available.set()
        return True

    async def get(self) -> str:
        while not self._items:
            self._available.clear()
            await self._available.wait()
        task_id, _ = self._items.popitem(last=False)
        return task_id

    def discard(self, task_id: str) -> None:
        self._items.pop(task_id, None)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._items


def event_is_for(event: TaskEvent, worker_id: str, capabilities: frozenset[str]) -> bool:
    """Whether a task event can concern this worker (the server filters too; this saves claims)."""
    if event.worker_id and event.worker_id != worker_id:
        return False
    return set(event.required_capabilities) <= capabilities


class Delivery:
    def __init__(
        self,
        client: CodetetherClient,
        worker_id: str,
        candidates: CandidateQueue,
        metrics: WorkerMetrics,
        *,
        capabilities: frozenset[str],
        poll_interval: float,
        redis_url: str | None,
        redis_prefix: str,
        serves_global: Callable[[], bool],
        on_codebase_event: Callable[[TaskEvent], None],
        is_running: Callable[[str], bool] = lambda task_id: False,
        on_task_cancelled: Callable[[str], None] = lambda task_id: None,
    ) -> None:
        self.client = client
        self.worker_id = worker_id
        self.candidates = candidates
        self.metrics = metrics
        self.capabilities = capabilities
        self.poll_interval = poll_interval
        self.redis_url = redis_url
        self.redis_prefix = redis_prefix
        self.serves_global = serves_global
        self.on_codebase_event = on_codebase_event
        self.is_running = is_running
        self.on_task_cancelled = on_task_cancelled
        self.safety_poll_interval = safety_poll_interval(poll_interval)
        self.events_unreliable = False
        self._subscribed_at: datetime | None = None
        self._seen: OrderedDict[str, None] = OrderedDict()  # task ids events announced, newest last
        self.mode = "polling"
        self.polls = 0
        self.events_received = 0
        self._poll_now = asyncio.Event()
        self._on_poll_error: Callable[[Exception], None] = lambda exc: None
        self._on_poll_ok: Callable[[], None] = lambda: None

    def set_server_observers(self, on_ok: Callable[[], None], on_error: Callable[[Exception], None]) -> None:
        self._on_poll_ok, self._on_poll_error = on_ok, on_error

    def request_poll(self) -> None:
        self._poll_now.set()

    def _set_mode(self, mode: str) -> None:
        if mode != self.mode:
            log.info("task delivery: %s", mode)
        self.mode = mode
        self.metrics.set_delivery_mode(mode)

    def _announced(self, task_id: str) -> None:
        self._seen[task_id] = None
        self._seen.move_to_end(task_id)
        while len(self._seen) > SEEN_LIMIT:
            self._seen.popitem(last=False)

    def _offer(self, task_id: str) -> None:
        if not self.is_running(task_id):
            self.candidates.add(task_id)

    async def run(self) -> None:
        loops = [self._poll_loop()]
        if self.redis_url:
            loops.append(self._redis_loop())
        await asyncio.gather(*loops)

    # ------------------------------------------------------------------ polling

    async def poll_once(self) -> int:
        tasks = await self.client.list_tasks(TaskStatus.PENDING, worker_id=self.worker_id)
        self.polls += 1
        if self.mode == "reactive" and self._subscribed_at is not None:
            missed = missed_by_events(tasks, self._seen.__contains__, self._subscribed_at, datetime.now(UTC))
            if missed and not self.events_unreliable:
                log.warning(
                    "Redis events are not arriving (%d task(s) found only by polling): is the server "
                    "publishing to %s with prefix %r? Polling every %gs meanwhile",
                    len(missed),
                    self.redis_url,
                    self.redis_prefix,
                    self.poll_interval,
                )
                self.events_unreliable = True
        for task in tasks:
            self._offer(task.id)
        return len(tasks)

    def _interval(self) -> float:
        if self.mode == "polling" or self.events_unreliable:
            return self.poll_interval
        return self.safety_poll_interval

    async def _poll_loop(self) -> None:
        while True:
            try:
                await self.poll_once()
                self._on_poll_ok()
            except SERVER_PROBLEMS as exc:
                self.metrics.server_errors.labels(operation="poll").inc()
                self._on_poll_error(exc)
                log.warning("polling for tasks failed: %s", exc)
            await wait_event(self._poll_now, self._interval())
            self._poll_now.clear()

    # ------------------------------------------------------------------ Redis

    def _handle_message(self, data: bytes | str) -> None:
        try:
            event = TaskEvent.model_validate_json(data)
        except ValidationError:
            log.warning("ignoring malformed task event: %.200r", data)
            return
        self.events_received += 1
        if event.event is EventType.TASK_AVAILABLE:
            if self.events_unreliable:
                log.info("Redis events arrive again")
                self.events_unreliable = False
            if event.task_id:
                self._announced(event.task_id)
            if event.task_id and event_is_for(event, self.worker_id, self.capabilities):
                self._offer(event.task_id)
        elif event.event is EventType.TASK_CANCELLED:
            if event.task_id and event.worker_id in (None, self.worker_id):
                self.on_task_cancelled(event.task_id)
        elif event.worker_id in (None, self.worker_id):
            self.on_codebase_event(event)

    async def _redis_loop(self) -> None:
        assert self.redis_url is not None
        attempt = 0
        lost_logged = False
        while True:
            connection = aioredis.from_url(
                self.redis_url,
                socket_connect_timeout=3.0,
                socket_timeout=10.0,  # a Redis that vanished without closing the socket is noticed
                socket_keepalive=True,
                health_check_interval=15,
            )
            pubsub = connection.pubsub()
            try:
                serving_global = self.serves_global()
                channels = channels_for_worker(
                    self.worker_id, serves_global=serving_global, prefix=self.redis_prefix
                )
                await pubsub.subscribe(*channels)
                attempt, lost_logged = 0, False
                self._subscribed_at = datetime.now(UTC)
                self.metrics.redis_reconnects.inc()
                self._set_mode("reactive")
                log.info("subscribed to %s", ", ".join(channels))
                self.request_poll()  # events published while we were away are gone: poll once
                while True:
                    if self.serves_global() != serving_global:
                        serving_global = not serving_global
                        channel = global_channel(self.redis_prefix)
                        if serving_global:
                            await pubsub.subscribe(channel)
                            self.request_poll()
                        else:
                            await pubsub.unsubscribe(channel)
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message and message.get("type") == "message":
                        self._handle_message(message["data"])
            except (RedisError, OSError, TimeoutError) as exc:
                if self.mode == "reactive":
                    log.warning("Redis connection lost (%s); polling every %gs", exc, self.poll_interval)
                elif not lost_logged:
                    log.warning(
                        "Redis unreachable at %s (%s); polling every %gs",
                        self.redis_url,
                        exc,
                        self.poll_interval,
                    )
                if self.mode == "reactive":
                    self.request_poll()  # catch up at once; later attempts leave polling to its interval
                lost_logged = True
                self._set_mode("polling")
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                with contextlib.suppress(Exception):
                    await connection.aclose()
            await asyncio.sleep(reconnect_delay(attempt))
            attempt += 1
