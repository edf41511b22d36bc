"""The planner with plain data: no cluster, no server, no clock."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from codetether_contract.models import Worker, WorkerStatus
from codetether_operator import build, plan
from codetether_operator.models import parse_codebase_spec, parse_pool_spec

NOW = datetime(2026, 1, 1, tzinfo=UTC)
POOL = {"metadata": {"name": "alpha", "namespace": "team", "uid": "u-1", "generation": 2}, "status": {}}


def _pool_spec(**extra: Any):
    return parse_pool_spec({"image": "w:1", "server": {"url": "http://s:8000"}, **extra})


def _worker(wid: str, status: WorkerStatus = WorkerStatus.ACTIVE, active: int = 0) -> Worker:
    return Worker(
        id=wid,
        name=wid,
        status=status,
        last_heartbeat=NOW,
        codebases=0,
        registered_at=NOW,
        active_tasks=active,
    )


def _ready_pod(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}


def _cond(status: dict[str, Any], type_: str) -> dict[str, Any]:
    found = plan.find_condition(status["conditions"], type_)
    assert found is not None
    return found


def test_new_pool_creates_every_child_and_is_progressing() -> None:
    result = plan.plan_pool(
        POOL,
        _pool_spec(replicas=2),
        None,
        observed={},
        secret=None,
        pods=[],
        server=plan.ServerView(workers=[]),
        now=NOW,
    )
    assert [(a.verb, a.kind) for a in result.actions] == [
        ("create", "ConfigMap"),
        ("create", "Service"),
        ("create", "PodDisruptionBudget"),
        ("create", "StatefulSet"),
    ]
    assert result.status["phase"] == "Progressing"
    assert _cond(result.status, "Progressing")["reason"] == plan.ROLLOUT_IN_PROGRESS
    assert result.status["observedGeneration"] == 2


def test_converged_pool_does_nothing_and_counts_workers() -> None:
    spec = _pool_spec(replicas=2)
    observed = {c["kind"]: c for c in build.build_children(POOL, spec)}
    workers = [
        _worker("alpha-0"),
        _worker("alpha-1", WorkerStatus.BUSY, 1),
        _worker("alpha-7"),
        _worker("other-0"),
    ]
    result = plan.plan_pool(
        POOL,
        spec,
        None,
        observed=observed,
        secret=None,
        pods=[_ready_pod("alpha-0"), _ready_pod("alpha-1")],
        server=plan.ServerView(workers=workers),
        now=NOW,
    )
    assert result.actions == []
    assert result.events == []
    status = result.status
    assert (
        status["readyReplicas"],
        status["registeredWorkers"],
        status["busyWorkers"],
        status["idleWorkers"],
    ) == (2, 2, 1, 1)
    assert status["phase"] == "Ready" and _cond(status, "Ready")["reason"] == plan.ALL_WORKERS_READY


def test_drift_is_patched_without_immutable_fields_and_scaling_is_announced() -> None:
    observed = {c["kind"]: c for c in build.build_children(POOL, _pool_spec(replicas=2))}
    result = plan.plan_pool(
        POOL,
        _pool_spec(replicas=5, storage={"size": "99Gi"}),
        None,
        observed=observed,
        secret=None,
        pods=[],
        server=plan.ServerView(workers=[]),
        now=NOW,
    )
    patches = {a.kind: a for a in result.actions}
    assert set(patches) == {"StatefulSet"}
    body = patches["StatefulSet"].body
    assert body["spec"]["replicas"] == 5
    assert "volumeClaimTemplates" not in body["spec"] and "selector" not in body["spec"]
    assert plan.Event("Normal", "Scaled", "Scaling workers from 2 to 5") in result.events


def test_missing_secret_blocks_everything_with_one_warning() -> None:
    spec = _pool_spec(server={"url": "http://s", "authSecretRef": {"name": "tok", "key": "k"}})
    result = plan.plan_pool(
        POOL, spec, None, observed={}, secret=None, pods=[], server=plan.ServerView(), now=NOW
    )
    assert result.actions == []
    assert _cond(result.status, "Degraded")["reason"] == plan.SECRET_NOT_FOUND
    assert [e.type for e in result.events] == ["Warning"]
    again = plan.plan_pool(
        {**POOL, "status": result.status},
        spec,
        None,
        observed={},
        secret={"data": {}},
        pods=[],
        server=plan.ServerView(),
        now=NOW,
    )
    assert _cond(again.status, "Degraded")["reason"] == plan.SECRET_KEY_MISSING
    assert len(again.events) == 1  # reason changed: warn again
    third = plan.plan_pool(
        {**POOL, "status": again.status},
        spec,
        None,
        observed={},
        secret={"data": {}},
        pods=[],
        server=plan.ServerView(),
        now=NOW,
    )
    assert third.events == []  # same failure: no repeated Warning
    assert (
        _cond(third.status, "Degraded")["lastTransitionTime"]
        == _cond(again.status, "Degraded")["lastTransitionTime"]
    )


def test_server_unreachable_keeps_applying_children() -> None:
    result = plan.plan_pool(
        POOL,
        _pool_spec(),
        None,
        observed={},
        secret=None,
        pods=[],
        server=plan.ServerView(error="refused"),
        now=NOW,
    )
    assert len(result.actions) == 4
    assert result.status["phase"] == "Degraded"
    assert _cond(result.status, "Degraded")["reason"] == plan.SERVER_UNREACHABLE


def _codebase(status: dict[str, Any] | None = None, generation: int = 1) -> dict[str, Any]:
    return {
        "metadata": {"name": "repo", "namespace": "team", "generation": generation},
        "status": status or {},
    }


def _plan_codebase(
    spec: dict[str, Any], status: dict[str, Any] | None = None, *, replicas: int = 3, **kw: Any
):
    args: dict[str, Any] = {
        "pool": POOL,
        "pool_spec": _pool_spec(replicas=replicas),
        "counts": {},
        "ready_pods": set(),
        "server": plan.CodebaseServerView(known_ids=frozenset()),
        "server_url": "http://s:8000",
        "now": NOW,
    }
    args.update(kw)
    return plan.plan_codebase(_codebase(status), parse_codebase_spec(spec), None, **args)


def test_spread_picks_the_pod_with_fewest_codebases() -> None:
    result = _plan_codebase(
        {"pool": "alpha"}, counts={"alpha-0": 2, "alpha-1": 1, "alpha-2": 1}, ready_pods={"alpha-2"}
    )
    assert result.placed_on == ["alpha-2"]  # tie on count: the ready pod
    registration = result.register[0]
    assert registration.body.worker_id == "alpha-2" and registration.body.codebase_id == "team.repo"
    assert registration.body.path == "/codebases/repo"
    assert result.status["worker"] == "alpha-2" and result.status["phase"] == "Registered"


def test_registered_codebase_is_left_alone_until_the_server_loses_it() -> None:
    first = _plan_codebase({"pool": "alpha"})
    status = first.status
    same = _plan_codebase(
        {"pool": "alpha"}, status, server=plan.CodebaseServerView(known_ids=frozenset({"team.repo"}))
    )
    assert same.register == [] and same.events == []
    lost = _plan_codebase({"pool": "alpha"}, status, server=plan.CodebaseServerView(known_ids=frozenset()))
    assert [r.worker_id for r in lost.register] == [status["worker"]]
    assert [e.reason for e in lost.events] == ["Reregistered"]


def test_scaled_down_pod_means_a_new_placement() -> None:
    status = {**_plan_codebase({"pool": "alpha"}).status, "worker": "alpha-2"}
    moved = _plan_codebase(
        {"pool": "alpha"},
        status,
        replicas=2,
        server=plan.CodebaseServerView(known_ids=frozenset({"team.repo"})),
        counts={"alpha-0": 3, "alpha-1": 1},
    )
    assert moved.placed_on == ["alpha-1"]
    assert moved.register[0].body.worker_id == "alpha-1"
    assert moved.events[0].reason == "Replaced" and "alpha-2" in moved.events[0].message


def test_bad_references() -> None:
    too_far = _plan_codebase({"pool": "alpha", "placement": {"ordinal": 3}})
    assert too_far.register == [] and too_far.status["phase"] == "Failed"
    assert _cond(too_far.status, "Degraded")["reason"] == plan.ORDINAL_OUT_OF_RANGE
    wrong_pod = _plan_codebase({"pool": "alpha", "placement": {"pod": "beta-0"}})
    assert _cond(wrong_pod.status, "Degraded")["reason"] == plan.POD_NOT_IN_POOL
    no_pool = plan.plan_codebase(
        _codebase(),
        parse_codebase_spec({"pool": "nope"}),
        None,
        pool=None,
        pool_spec=None,
        counts={},
        ready_pods=set(),
        server=plan.CodebaseServerView(),
        server_url=None,
        now=NOW,
    )
    assert _cond(no_pool.status, "Degraded")["reason"] == plan.POOL_NOT_FOUND and no_pool.register == []


def test_global_codebase_registers_on_every_pod_and_drops_removed_ones() -> None:
    first = _plan_codebase({"pool": "alpha", "global": True})
    assert [r.body.codebase_id for r in first.register] == ["global"] * 3
    assert first.status["workers"] == ["alpha-0", "alpha-1", "alpha-2"]
    smaller = _plan_codebase({"pool": "alpha", "global": True}, first.status, replicas=1)
    assert smaller.deregister == ["global-alpha-1", "global-alpha-2"]


def test_deletion_never_wedges() -> None:
    ok = plan.plan_codebase_deletion(
        ids=["a"], server_error=None, pool_exists=True, seconds_deleting=0, give_up_after=60
    )
    assert ok.release and ok.warning is None
    wait = plan.plan_codebase_deletion(
        ids=["a"], server_error="down", pool_exists=True, seconds_deleting=5, give_up_after=60
    )
    assert not wait.release
    late = plan.plan_codebase_deletion(
        ids=["a"], server_error="down", pool_exists=True, seconds_deleting=61, give_up_after=60
    )
    assert late.release and late.warning
    orphan = plan.plan_codebase_deletion(
        ids=["a"], server_error="down", pool_exists=False, seconds_deleting=0, give_up_after=60
    )
    assert orphan.release and orphan.warning


def test_server_codebase_ids_are_deterministic_and_valid() -> None:
    from codetether_contract.models import is_valid_id

    assert plan.server_codebase_id("ns", "repo") == "ns.repo"
    long_id = plan.server_codebase_id("n" * 63, "r" * 253)
    assert is_valid_id(long_id) and long_id == plan.server_codebase_id("n" * 63, "r" * 253)


# --------------------------------------------------------------------------- two global codebases


def _claim(name: str, created: str, workers: tuple[str, ...] = ()) -> plan.GlobalClaim:
    return plan.GlobalClaim(created, name, workers)


def test_the_oldest_global_codebase_wins_and_the_name_breaks_a_tie() -> None:
    older = _claim("zeta", "2026-01-01T00:00:00Z")
    newer = _claim("alpha", "2026-01-01T00:00:05Z")
    same_second = _claim("beta", "2026-01-01T00:00:00Z")
    assert plan.global_owner([newer, older]) == older
    assert plan.global_owner([older, same_second, newer]) == same_second
    assert plan.global_owner([]) is None


def test_a_second_global_codebase_registers_nothing_and_names_the_winner() -> None:
    # It had registered (say it was global first under another name): only what is not the
    # winner's is removed; global-<pod> of the current pods are the winner's registrations too.
    status = {
        **_plan_codebase({"pool": "alpha", "global": True}, replicas=4).status,
        "serverUrl": "http://s:8000",
    }
    claims = [_claim("older", "2026-01-01T00:00:00Z"), _claim("repo", "2026-01-02T00:00:00Z")]
    loser = _plan_codebase({"pool": "alpha", "global": True}, status, global_claims=claims)
    assert loser.register == []
    assert loser.deregister == ["global-alpha-3"]  # the pod the pool no longer has
    assert loser.status["phase"] == "Failed" and loser.status["workers"] == []
    degraded = _cond(loser.status, "Degraded")
    assert degraded["reason"] == plan.GLOBAL_CONFLICT and "'older'" in degraded["message"]
    assert [(e.type, e.reason) for e in loser.events] == [("Warning", plan.GLOBAL_CONFLICT)]
    again = _plan_codebase({"pool": "alpha", "global": True}, loser.status, global_claims=claims)
    assert again.events == [] and again.deregister == [] and again.register == []
    # The winner goes: this one takes over, on every pod.
    alone = _plan_codebase({"pool": "alpha", "global": True}, again.status, global_claims=claims[1:])
    assert [r.worker_id for r in alone.register] == ["alpha-0", "alpha-1", "alpha-2"]
    assert alone.status["phase"] == "Registered"


def test_the_winner_is_not_disturbed_by_a_younger_rival() -> None:
    claims = [_claim("repo", "2026-01-01T00:00:00Z"), _claim("younger", "2026-01-02T00:00:00Z")]
    winner = _plan_codebase({"pool": "alpha", "global": True}, global_claims=claims)
    assert len(winner.register) == 3 and winner.status["phase"] == "Registered"


def test_a_deleted_global_codebase_leaves_shared_ids_to_a_live_rival() -> None:
    status = {"workers": ["alpha-0", "alpha-1"]}
    assert plan.ids_to_remove_on_delete(status, "repo", []) == ["global-alpha-0", "global-alpha-1"]
    rival = [_claim("other", "2026-01-01T00:00:00Z")]
    assert plan.ids_to_remove_on_delete(status, "repo", rival) == []
    assert plan.ids_to_remove_on_delete({"codebaseId": "team.repo"}, "repo", rival) == ["team.repo"]


# --------------------------------------------------------------------------- waking codebases


def test_scale_down_wakes_the_codebases_on_removed_pods_and_an_outdated_global_one() -> None:
    placed = [("a", "alpha-0"), ("b", "alpha-2"), ("c", "alpha-3"), ("d", "alpha-1")]
    assert plan.codebases_to_wake("alpha", 2, placed, []) == ["b", "c"]
    assert plan.codebases_to_wake("alpha", 4, placed, []) == []
    claims = [
        _claim("shared", "2026-01-01T00:00:00Z", ("alpha-0", "alpha-1", "alpha-2")),
        _claim("loser", "2026-01-02T00:00:00Z"),
    ]
    assert plan.codebases_to_wake("alpha", 2, [], claims) == ["shared"]
    assert plan.codebases_to_wake("alpha", 3, [], claims) == []
    assert plan.codebases_to_wake("alpha", 4, [], claims) == ["shared"]  # scale-up: new pods need it


# --------------------------------------------------------------------------- server URL change


def test_a_new_server_url_registers_there_and_leaves_the_old_registrations_to_remove() -> None:
    first = _plan_codebase({"pool": "alpha"}, server_url="http://old:8000")
    assert first.status["serverUrl"] == "http://old:8000"
    moved = _plan_codebase({"pool": "alpha"}, first.status, server_url="http://new:8000")
    assert [r.body.codebase_id for r in moved.register] == ["team.repo"]
    assert moved.deregister == []  # nothing of this codebase is on the new server yet
    assert moved.previous_server == plan.PreviousServer("http://old:8000", None, ["team.repo"])
    assert moved.status["serverUrl"] == "http://new:8000"
    settled = _plan_codebase(
        {"pool": "alpha"},
        moved.status,
        server_url="http://new:8000",
        server=plan.CodebaseServerView(known_ids=frozenset({"team.repo"})),
    )
    assert settled.previous_server is None and settled.register == []


def test_a_new_server_url_that_cannot_be_reached_changes_nothing_yet() -> None:
    first = _plan_codebase({"pool": "alpha"}, server_url="http://old:8000")
    down = _plan_codebase(
        {"pool": "alpha"},
        first.status,
        server_url="http://new:8000",
        server=plan.CodebaseServerView(error="refused"),
    )
    assert down.register == [] and down.previous_server is None
    assert down.status["serverUrl"] == "http://old:8000"  # the old registrations are still there


def test_a_new_server_url_wakes_the_codebases_registered_on_the_old_one() -> None:
    on = [("a", "http://old:8000"), ("b", "http://new:8000")]
    assert plan.codebases_to_wake("alpha", 2, [], [], server_url="http://new:8000", registered_on=on) == ["a"]


def test_a_global_codebase_that_stops_being_global_leaves_its_ids_to_the_other_one() -> None:
    was_global = _plan_codebase({"pool": "alpha", "global": True}).status
    rival = [_claim("other", "2026-01-02T00:00:00Z")]
    now_pinned = _plan_codebase({"pool": "alpha"}, was_global, global_claims=rival)
    assert now_pinned.deregister == [] and now_pinned.wake == ["other"]
    assert [r.body.codebase_id for r in now_pinned.register] == ["team.repo"]
    alone = _plan_codebase({"pool": "alpha"}, was_global, global_claims=[])
    assert alone.deregister == ["global-alpha-0", "global-alpha-1", "global-alpha-2"] and alone.wake == []
