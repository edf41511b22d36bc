"""Routing rules (who may run what, which channel hears of it): examples and properties."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from codetether_contract.events import channels_for_worker, global_channel, shared_channel, worker_channel
from codetether_contract.models import Codebase, Task, TaskStatus
from codetether_server import routing
from codetether_server.routing import WorkerView

NOW = datetime(2026, 1, 1, tzinfo=UTC)
WORKERS = ["w1", "w2", "w3"]
CAPS = ["agent", "build", "deploy", "gpu", "test"]


def task(codebase_id: str, caps: list[str] | None = None, priority: int = 0, created: float = 0.0) -> Task:
    return Task(
        id=f"t-{codebase_id}-{priority}-{created}",
        title="t",
        prompt="p",
        codebase_id=codebase_id,
        priority=priority,
        metadata={"required_capabilities": caps} if caps is not None else {},
        status=TaskStatus.PENDING,
        created_at=datetime.fromtimestamp(1_700_000_000 + created, UTC),
        updated_at=NOW,
    )


def codebase(codebase_id: str, worker_id: str | None) -> Codebase:
    return Codebase(
        id=codebase_id, name=codebase_id, path="/c", worker_id=worker_id, created_at=NOW, updated_at=NOW
    )


def worker(worker_id: str, caps: list[str], serves_global: bool = False) -> WorkerView:
    return WorkerView(id=worker_id, capabilities=frozenset(caps), serves_global=serves_global)


def test_examples() -> None:
    w1 = worker("w1", ["agent", "build"])
    pinned_w2 = codebase("c2", "w2")
    assert routing.may_run(task("c1"), codebase("c1", "w1"), w1).allowed
    denied = routing.may_run(task("c2"), pinned_w2, w1)
    assert not denied.allowed and "assigned to worker w2" in denied.reason
    assert routing.may_run(task("shared"), codebase("shared", None), w1).allowed
    assert not routing.may_run(task("global"), None, w1).allowed
    assert routing.may_run(task("global"), None, worker("w1", ["agent"], serves_global=True)).allowed
    missing = routing.may_run(task("shared", ["gpu", "build"]), codebase("shared", None), w1)
    assert not missing.allowed and missing.reason.endswith("gpu")
    assert not routing.may_run(task("gone"), None, w1).allowed


def test_serves_global_either_way() -> None:
    assert routing.serves_global("w1", "anything", [])
    assert routing.serves_global("w1", None, [codebase("global-w1", "w1")])
    assert not routing.serves_global("w1", None, [codebase("global-w2", "w2")])


def test_order_is_priority_then_age() -> None:
    tasks = [
        task("a", priority=0, created=1),
        task("a", priority=5, created=3),
        task("a", priority=0, created=0),
    ]
    assert [(t.priority, t.created_at.second) for t in sorted(tasks, key=routing.order_key)] == [
        (5, 23),
        (0, 20),
        (0, 21),
    ]


caps_lists = st.lists(st.sampled_from(CAPS), max_size=4, unique=True)
workers = st.builds(worker, st.sampled_from(WORKERS), caps_lists, st.booleans())
codebase_owner = st.one_of(st.none(), st.sampled_from(WORKERS))


@st.composite
def task_and_codebase(draw: st.DrawFn) -> tuple[Task, Codebase | None]:
    kind = draw(st.sampled_from(["global", "registered", "unregistered"]))
    caps = draw(st.one_of(st.none(), caps_lists))
    if kind == "global":
        return task("global", caps), None
    cb = codebase("cb", draw(codebase_owner))
    return task("cb", caps), (cb if kind == "registered" else None)


@given(task_and_codebase(), workers)
def test_an_allowed_worker_listens_on_the_channel_the_task_is_announced_on(
    pair: tuple[Task, Codebase | None], view: WorkerView
) -> None:
    t, cb = pair
    if routing.may_run(t, cb, view).allowed:
        channel = routing.task_channel(t, cb, "p")
        assert channel in channels_for_worker(view.id, serves_global=view.serves_global, prefix="p")
        assert t.codebase_id in routing.codebase_ids_for(view, [cb] if cb else [])


@given(task_and_codebase(), workers)
def test_the_rules(pair: tuple[Task, Codebase | None], view: WorkerView) -> None:
    t, cb = pair
    allowed = routing.may_run(t, cb, view).allowed
    caps_ok = set(t.required_capabilities) <= view.capabilities
    if t.codebase_id == "global":
        assert allowed == (view.serves_global and caps_ok)
    elif cb is None:
        assert not allowed
    else:
        assert allowed == ((cb.worker_id in (None, view.id)) and caps_ok)


@given(task_and_codebase(), workers, caps_lists)
def test_more_capabilities_never_take_a_task_away(
    pair: tuple[Task, Codebase | None], view: WorkerView, extra: list[str]
) -> None:
    t, cb = pair
    richer = WorkerView(view.id, view.capabilities | set(extra), view.serves_global)
    if routing.may_run(t, cb, view).allowed:
        assert routing.may_run(t, cb, richer).allowed


@given(task_and_codebase())
def test_announcement_channels(pair: tuple[Task, Codebase | None]) -> None:
    t, cb = pair
    channel = routing.task_channel(t, cb, "p")
    if t.codebase_id == "global":
        assert channel == global_channel("p")
    elif cb is None:
        assert channel is None
    elif cb.worker_id is None:
        assert channel == shared_channel("p")
    else:
        assert channel == worker_channel(cb.worker_id, "p")
        assert routing.task_target(t, cb) == cb.worker_id


@given(
    st.lists(
        st.tuples(
            st.integers(min_value=-1000, max_value=1000),
            st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2100, 1, 1)),
        ),
        min_size=2,
        max_size=20,
    )
)
def test_the_redis_queue_score_keeps_the_routing_order(entries: list[tuple[int, datetime]]) -> None:
    from codetether_server.store.redis import order_score

    tasks = []
    for i, (priority, created) in enumerate(entries):
        t = task("c", priority=priority)
        stamp = created.replace(microsecond=created.microsecond // 1000 * 1000, tzinfo=UTC)
        tasks.append(t.model_copy(update={"id": f"t{i}", "created_at": stamp}))
    for t in tasks:
        assert order_score(t) < 2**53
    by_score = sorted(tasks, key=lambda t: (order_score(t), t.id))
    by_rule = sorted(tasks, key=routing.order_key)
    assert [(t.priority, t.created_at) for t in by_score] == [(t.priority, t.created_at) for t in by_rule]
