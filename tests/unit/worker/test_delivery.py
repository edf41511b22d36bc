"""Delivery decisions that need no server: the candidate queue, event filtering, backoff."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from codetether_contract.events import EventType, TaskEvent
from codetether_contract.models import Task, TaskStatus
from codetether_worker.delivery import (
    CandidateQueue,
    event_is_for,
    missed_by_events,
    reconnect_delay,
    safety_poll_interval,
)


async def test_candidate_queue_dedupes_and_keeps_order() -> None:
    queue = CandidateQueue()
    assert queue.add("a") and queue.add("b")
    assert not queue.add("a")
    assert len(queue) == 2
    assert await queue.get() == "a"
    assert queue.add("a")  # taken out, so it may come again
    assert await queue.get() == "b"
    assert await queue.get() == "a"
    waiter = asyncio.create_task(queue.get())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    queue.add("c")
    assert await asyncio.wait_for(waiter, 5) == "c"


def test_events_for_other_workers_or_missing_capabilities_are_ignored() -> None:
    caps = frozenset({"agent", "build"})
    event = TaskEvent(event=EventType.TASK_AVAILABLE, task_id="t")
    assert event_is_for(event, "w1", caps)
    assert event_is_for(event.model_copy(update={"worker_id": "w1"}), "w1", caps)
    assert not event_is_for(event.model_copy(update={"worker_id": "w2"}), "w1", caps)
    assert event_is_for(event.model_copy(update={"required_capabilities": ["build"]}), "w1", caps)
    assert not event_is_for(event.model_copy(update={"required_capabilities": ["gpu"]}), "w1", caps)


def test_reconnect_backoff_grows_and_is_capped() -> None:
    assert 0.25 <= reconnect_delay(0) <= 0.5
    assert 1.0 <= reconnect_delay(2) <= 2.0
    assert all(2.5 <= reconnect_delay(n) <= 5.0 for n in range(4, 100))


def _task(task_id: str, created: datetime) -> Task:
    return Task(
        id=task_id,
        title="t",
        prompt="p",
        codebase_id="c",
        status=TaskStatus.PENDING,
        created_at=created,
        updated_at=created,
    )


def test_missed_by_events_only_counts_old_unannounced_tasks_from_while_subscribed() -> None:
    subscribed = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    now = subscribed + timedelta(seconds=60)
    tasks = [
        _task("before-subscribing", subscribed - timedelta(seconds=1)),
        _task("announced", subscribed + timedelta(seconds=10)),
        _task("missed", subscribed + timedelta(seconds=10)),
        _task("too-young", now - timedelta(seconds=0.5)),
    ]
    assert missed_by_events(tasks, {"announced"}.__contains__, subscribed, now) == ["missed"]


def test_safety_poll_interval() -> None:
    assert safety_poll_interval(5) == 30
    assert safety_poll_interval(0.5) == 3
    assert safety_poll_interval(30) == 60
    assert safety_poll_interval(120) == 120  # never more often than asked


def test_task_cancelled_events_for_this_worker_reach_the_runtime() -> None:
    from codetether_contract.client import CodetetherClient
    from codetether_worker.delivery import Delivery
    from codetether_worker.health import WorkerMetrics

    cancelled: list[str] = []
    codebase_events: list[TaskEvent] = []
    delivery = Delivery(
        CodetetherClient("http://server.invalid"),
        "w1",
        CandidateQueue(),
        WorkerMetrics(),
        capabilities=frozenset({"agent"}),
        poll_interval=1.0,
        redis_url=None,
        redis_prefix="codetether",
        serves_global=lambda: False,
        on_codebase_event=codebase_events.append,
        on_task_cancelled=cancelled.append,
    )
    event = TaskEvent(event=EventType.TASK_CANCELLED, task_id="t1", worker_id="w1")
    delivery._handle_message(event.model_dump_json())
    delivery._handle_message(event.model_copy(update={"worker_id": "w2", "task_id": "t2"}).model_dump_json())
    delivery._handle_message(event.model_copy(update={"task_id": None}).model_dump_json())
    assert cancelled == ["t1"]
    assert codebase_events == []
    assert len(delivery.candidates) == 0
