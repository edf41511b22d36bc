"""Delivery decisions that need no server: the candidate queue, event filtering, backoff."""

from __future__ import annotations

import asyncio

from codetether_contract.events import EventType, TaskEvent
from codetether_worker.delivery import CandidateQueue, event_is_for, reconnect_delay


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
