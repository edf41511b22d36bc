"""Lease and attempt rules: examples, and properties over random sequences of operations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from codetether_contract.models import Task, TaskStatus, WorkerStatus
from codetether_server import leases
from codetether_server.errors import Conflict

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def pending(max_attempts: int = 3) -> Task:
    return Task(
        id="t1",
        title="t",
        prompt="p",
        codebase_id="global",
        status=TaskStatus.PENDING,
        max_attempts=max_attempts,
        created_at=T0,
        updated_at=T0,
    )


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_claim_renew_and_conflicts() -> None:
    running = leases.claim(pending(), "w1", at(1), at(61))
    assert (running.status, running.worker_id, running.lease_expires_at) == (TaskStatus.RUNNING, "w1", at(61))
    assert leases.claim(running, "w1", at(2), at(62)).lease_expires_at == at(62)
    with pytest.raises(Conflict, match="another worker"):
        leases.claim(running, "w2", at(2), at(62))
    with pytest.raises(Conflict):
        leases.renew(running, "w2", at(2), at(62))


def test_expiry_requeues_then_fails() -> None:
    task = leases.claim(pending(max_attempts=2), "w1", at(0), at(10))
    with pytest.raises(Conflict):
        leases.expire(task, at(9))
    again = leases.expire(task, at(10))
    assert (again.status, again.attempts, again.worker_id) == (TaskStatus.PENDING, 1, None)
    task = leases.claim(again, "w2", at(11), at(21))
    failed = leases.expire(task, at(30))
    assert (failed.status, failed.attempts) == (TaskStatus.FAILED, 2)
    assert failed.error == "lease expired 2 times (max_attempts=2); last held by worker w2"


def test_finish_hand_back_and_cancel() -> None:
    task = leases.claim(pending(), "w1", at(0), at(10))
    with pytest.raises(Conflict):
        leases.finish(task, "w2", TaskStatus.COMPLETED, at(1))
    done = leases.finish(task, "w1", TaskStatus.COMPLETED, at(1), result="ok", session_id="s")
    assert (done.status, done.result, done.session_id, done.lease_expires_at) == (
        TaskStatus.COMPLETED,
        "ok",
        "s",
        None,
    )
    assert leases.finish(done, "w1", TaskStatus.COMPLETED, at(2)) is done
    with pytest.raises(Conflict):
        leases.finish(done, "w1", TaskStatus.FAILED, at(2))
    back = leases.hand_back(leases.claim(pending(), "w1", at(0), at(10)), "w1", at(1))
    assert (back.status, back.attempts, back.worker_id) == (TaskStatus.PENDING, 0, None)
    with pytest.raises(Conflict):
        leases.finish(pending(), "w1", TaskStatus.COMPLETED, at(1))
    assert leases.finish(pending(), "admin", TaskStatus.CANCELLED, at(1)).status is TaskStatus.CANCELLED


def test_results_are_bounded_with_a_marker() -> None:
    assert leases.bound_text("short", 100) == "short"
    cut = leases.bound_text("x" * 500, 100)
    assert cut is not None and len(cut) == 100 and cut.endswith(leases.TRUNCATION_SUFFIX)


def test_worker_goes_offline_without_heartbeats() -> None:
    assert leases.worker_status(WorkerStatus.BUSY, at(0), at(90), 90) is WorkerStatus.BUSY
    assert leases.worker_status(WorkerStatus.BUSY, at(0), at(91), 90) is WorkerStatus.OFFLINE


@given(st.lists(st.text(max_size=40), max_size=30), st.integers(min_value=1, max_value=100))
def test_output_keeps_the_newest_characters(chunks: list[str], limit: int) -> None:
    output, truncated = "", False
    for chunk in chunks:
        output, cut = leases.append_output(output, chunk, limit)
        truncated = truncated or cut
    everything = "".join(chunks)
    assert len(output) <= limit
    assert everything.endswith(output)
    assert truncated == (len(everything) > limit)
    assert output == everything[-limit:] if everything else output == ""


OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(["claim", "renew", "hand_back", "complete", "fail", "expire", "tick"]),
        st.sampled_from(["w1", "w2"]),
    ),
    max_size=40,
)


@given(OPERATIONS, st.integers(min_value=1, max_value=4))
def test_invariants_over_any_sequence(operations: list[tuple[str, str]], max_attempts: int) -> None:
    """Whatever happens: one holder at most, attempts only grow, final states stay final."""
    task = pending(max_attempts)
    clock = 0.0
    for name, worker_id in operations:
        clock += 1
        now, until = at(clock), at(clock + 3)
        before = task
        try:
            if name == "claim":
                task = leases.claim(task, worker_id, now, until)
            elif name == "renew":
                task = leases.renew(task, worker_id, now, until)
            elif name == "hand_back":
                task = leases.hand_back(task, worker_id, now)
            elif name in ("complete", "fail"):
                status = TaskStatus.COMPLETED if name == "complete" else TaskStatus.FAILED
                task = leases.finish(task, worker_id, status, now)
            elif name == "expire":
                task = leases.expire(task, at(clock + 10))
            else:
                clock += 5
        except Conflict:
            assert task is before
            continue
        if before.status.is_final:
            assert task.status is before.status
        if before.status is TaskStatus.RUNNING and name in (
            "claim",
            "renew",
            "hand_back",
            "complete",
            "fail",
        ):
            assert before.worker_id == worker_id  # only the holder changes a running task
        assert task.attempts >= before.attempts
        assert task.attempts <= task.max_attempts
        if task.status is TaskStatus.RUNNING:
            assert task.worker_id is not None and task.lease_expires_at is not None
        if task.status is TaskStatus.PENDING:
            assert task.worker_id is None and task.lease_expires_at is None
        if task.status is TaskStatus.FAILED and task.attempts == task.max_attempts:
            assert task.error is not None and "lease expired" in task.error


def test_cancel_by_request_pending_running_and_final() -> None:
    cancelled = leases.cancel(pending(), at(1))
    assert (cancelled.status, cancelled.error, cancelled.completed_at) == (
        TaskStatus.CANCELLED,
        leases.CANCELLED_BY_REQUEST,
        at(1),
    )
    running = leases.claim(pending(), "w1", at(0), at(10))
    stopped = leases.cancel(running, at(2))
    assert (stopped.status, stopped.worker_id, stopped.lease_expires_at, stopped.error) == (
        TaskStatus.CANCELLED,
        "w1",
        None,
        "cancelled by request",
    )
    assert not leases.is_expired(stopped, at(100))
    # The holder's late reports cannot bring it back.
    with pytest.raises(Conflict, match="already cancelled"):
        leases.finish(stopped, "w1", TaskStatus.COMPLETED, at(3), result="done")
    with pytest.raises(Conflict):
        leases.hand_back(stopped, "w1", at(3))
    with pytest.raises(Conflict):
        leases.renew(stopped, "w1", at(3), at(13))
    done = leases.finish(running, "w1", TaskStatus.COMPLETED, at(3))
    for final in (stopped, done, leases.expire(leases.claim(pending(1), "w1", at(0), at(1)), at(5))):
        with pytest.raises(Conflict, match=f"already {final.status.value}: only pending or running"):
            leases.cancel(final, at(4))


def test_retention_cutoff_and_what_is_past_it() -> None:
    assert leases.retention_cutoff(at(100), 0) is None
    cutoff = leases.retention_cutoff(at(100), 30)
    assert cutoff == at(70)
    running = leases.claim(pending(), "w1", at(0), at(10))
    finished_at_60 = leases.finish(running, "w1", TaskStatus.FAILED, at(60), error="boom")
    finished_at_70 = leases.finish(running, "w1", TaskStatus.COMPLETED, at(70))
    cancelled_at_10 = leases.cancel(pending(), at(10))
    assert leases.past_retention(finished_at_60, cutoff)
    assert leases.past_retention(cancelled_at_10, cutoff)
    assert not leases.past_retention(finished_at_70, cutoff)  # exactly at the cutoff: kept
    assert not leases.past_retention(pending(), cutoff)
    assert not leases.past_retention(running, cutoff)
    # A requeued task was not finished, whatever its age.
    assert not leases.past_retention(leases.expire(running, at(20)), cutoff)


@given(
    st.sampled_from(list(TaskStatus)),
    st.floats(min_value=0, max_value=1000),
    st.floats(min_value=0, max_value=1000),
    st.floats(min_value=0.001, max_value=1000),
)
def test_only_final_tasks_finished_longer_ago_than_the_retention_go(
    status: TaskStatus, finished: float, now: float, retention: float
) -> None:
    task = pending().model_copy(
        update={"status": status, "completed_at": at(finished) if status.is_final else None}
    )
    cutoff = leases.retention_cutoff(at(now), retention)
    assert cutoff is not None
    expected = status.is_final and (now - finished) > retention
    # Float seconds through timedelta round to microseconds: skip the knife edge.
    if abs((now - finished) - retention) > 1e-3:
        assert leases.past_retention(task, cutoff) is expected
