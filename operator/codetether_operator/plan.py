"""The pure planner: (spec, what the cluster has, what the server has) -> what to do, and the status.

Handlers observe, call ``plan_pool`` / ``plan_codebase`` / ``plan_codebase_deletion``, apply the
actions, and write the returned status. Nothing here does I/O or reads a clock: ``now`` is passed in,
so every decision is tested with plain data.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from codetether_contract.models import CodebaseCreate, Worker, WorkerStatus, global_codebase_id
from codetether_operator import build
from codetether_operator.models import (
    CodebasePhase,
    CodebaseSpec,
    ConditionStatus,
    PoolPhase,
    PoolSpec,
    SecretKeyRef,
)

# Stable condition reasons (documented in docs/operator.md; users and alerts match on them).
AS_EXPECTED = "AsExpected"
INVALID_SPEC = "InvalidSpec"
SECRET_NOT_FOUND = "SecretNotFound"
SECRET_KEY_MISSING = "SecretKeyMissing"
SERVER_UNREACHABLE = "ServerUnreachable"
SERVER_REJECTED = "ServerRejected"
APPLY_FAILED = "ApplyFailed"
ROLLOUT_IN_PROGRESS = "RolloutInProgress"
ROLLOUT_COMPLETE = "RolloutComplete"
WORKERS_NOT_READY = "WorkersNotReady"
WORKERS_NOT_REGISTERED = "WorkersNotRegistered"
ALL_WORKERS_READY = "AllWorkersReady"
SCALED_TO_ZERO = "ScaledToZero"
POOL_NOT_FOUND = "PoolNotFound"
POOL_INVALID = "PoolInvalid"
ORDINAL_OUT_OF_RANGE = "OrdinalOutOfRange"
POD_NOT_IN_POOL = "PodNotInPool"
NO_WORKERS = "NoWorkers"
REGISTERED = "Registered"
GLOBAL_CONFLICT = "GlobalConflict"
OLD_SERVER_UNREACHABLE = "OldServerUnreachable"

# Set on a Codebase to have its reconcile run now (a change kopf reacts to). Not under the
# persistence prefix ``codetether.run/``: kopf leaves annotations there out of its diff.
WAKE_ANNOTATION = "operator.codetether.run/reconcile-requested"

READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"

# StatefulSet fields the API server refuses to change after creation.
IMMUTABLE_STATEFULSET_FIELDS = ("selector", "serviceName", "volumeClaimTemplates", "podManagementPolicy")

_ORDINAL_RE_CACHE: dict[str, re.Pattern[str]] = {}


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class ChildAction:
    verb: str  # create | patch
    kind: str
    namespace: str
    name: str
    body: dict[str, Any]


@dataclass(frozen=True)
class ServerView:
    """What the server said, or why it said nothing (``error`` set: unreachable or refused)."""

    workers: list[Worker] | None = None
    error: str | None = None
    error_reason: str = SERVER_UNREACHABLE


@dataclass
class PoolPlan:
    actions: list[ChildAction] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)


# --------------------------------------------------------------------------- helpers


def is_subset(desired: Any, actual: Any) -> bool:
    """True when everything ``desired`` says is already in ``actual`` (server defaults ignored)."""
    if isinstance(desired, dict):
        return isinstance(actual, dict) and all(is_subset(v, actual.get(k)) for k, v in desired.items())
    if isinstance(desired, list):
        return (
            isinstance(actual, list)
            and len(desired) == len(actual)
            and all(is_subset(d, a) for d, a in zip(desired, actual, strict=True))
        )
    if isinstance(desired, int | float) and isinstance(actual, int | float) and not isinstance(desired, bool):
        return float(desired) == float(actual)
    if isinstance(desired, int | float) and isinstance(actual, str) and not isinstance(desired, bool):
        return str(desired) == actual  # quantities: the API server answers 2 as "2"
    return bool(desired == actual)


def condition(
    type_: str,
    status: bool,
    reason: str,
    message: str,
    *,
    now: datetime,
    previous: list[dict[str, Any]] | None,
    generation: int | None,
) -> dict[str, Any]:
    """A condition whose lastTransitionTime only moves when its status does."""
    value = ConditionStatus.TRUE if status else ConditionStatus.FALSE
    transition = now.isoformat().replace("+00:00", "Z")
    for old in previous or []:
        if old.get("type") == type_ and old.get("status") == value and old.get("lastTransitionTime"):
            transition = old["lastTransitionTime"]
    result: dict[str, Any] = {
        "type": type_,
        "status": str(value),
        "reason": reason,
        "message": message,
        "lastTransitionTime": transition,
    }
    if generation is not None:
        result["observedGeneration"] = generation
    return result


def find_condition(conditions: list[dict[str, Any]] | None, type_: str) -> dict[str, Any] | None:
    for item in conditions or []:
        if item.get("type") == type_:
            return item
    return None


def ordinal_of(pool_name: str, pod: str) -> int | None:
    """``<pool>-<n>`` -> n; None for a name that is not one of the pool's pods."""
    pattern = _ORDINAL_RE_CACHE.get(pool_name)
    if pattern is None:
        pattern = _ORDINAL_RE_CACHE.setdefault(
            pool_name, re.compile(rf"^{re.escape(pool_name)}-(0|[1-9][0-9]*)$")
        )
    match = pattern.match(pod)
    return int(match.group(1)) if match else None


def _ordinal_below(pool_name: str, pod: str, replicas: int) -> bool:
    ordinal = ordinal_of(pool_name, pod)
    return ordinal is not None and ordinal < replicas


def pod_is_ready(pod: dict[str, Any]) -> bool:
    if pod.get("metadata", {}).get("deletionTimestamp"):
        return False
    for item in pod.get("status", {}).get("conditions") or []:
        if item.get("type") == "Ready":
            return bool(item.get("status") == "True")
    return False


# --------------------------------------------------------------------------- pool


def desired_children(pool: dict[str, Any], spec: PoolSpec) -> list[dict[str, Any]]:
    return build.build_children(pool, spec)


def patch_for(desired: dict[str, Any]) -> dict[str, Any]:
    """What to send to correct drift: the desired object without the fields that cannot change."""
    patch = {"metadata": {k: desired["metadata"][k] for k in ("labels", "ownerReferences")}}
    for key, value in desired.items():
        if key in ("apiVersion", "kind", "metadata"):
            continue
        patch[key] = value
    if desired["kind"] == "StatefulSet":
        patch["spec"] = {k: v for k, v in desired["spec"].items() if k not in IMMUTABLE_STATEFULSET_FIELDS}
    return patch


def plan_children(
    desired: list[dict[str, Any]], observed: dict[str, dict[str, Any] | None]
) -> list[ChildAction]:
    """Create what is missing, patch what drifted (adopting unowned objects of the same name)."""
    actions = []
    for manifest in desired:
        kind, name, namespace = (
            manifest["kind"],
            manifest["metadata"]["name"],
            manifest["metadata"]["namespace"],
        )
        current = observed.get(kind)
        if current is None:
            actions.append(ChildAction("create", kind, namespace, name, manifest))
            continue
        patch = patch_for(manifest)
        if not is_subset(patch, current):
            actions.append(ChildAction("patch", kind, namespace, name, patch))
    return actions


def secret_problem(spec: PoolSpec, secret: dict[str, Any] | None) -> tuple[str, str] | None:
    ref = spec.server.auth_secret_ref
    if ref is None:
        return None
    if secret is None:
        return SECRET_NOT_FOUND, f"Secret {ref.name!r} (spec.server.authSecretRef) does not exist"
    if ref.key not in (secret.get("data") or {}) and ref.key not in (secret.get("stringData") or {}):
        return (
            SECRET_KEY_MISSING,
            f"Secret {ref.name!r} has no key {ref.key!r} (spec.server.authSecretRef.key)",
        )
    return None


def worker_counts(pool_name: str, replicas: int, workers: list[Worker]) -> tuple[int, int]:
    """(registered, busy) among the pool's current pods."""
    registered = busy = 0
    for worker in workers:
        ordinal = ordinal_of(pool_name, worker.id)
        if ordinal is None or ordinal >= replicas or worker.status is WorkerStatus.OFFLINE:
            continue
        registered += 1
        if worker.status is WorkerStatus.BUSY or worker.active_tasks > 0:
            busy += 1
    return registered, busy


def plan_pool(
    pool: dict[str, Any],
    spec: PoolSpec | None,
    spec_error: str | None,
    *,
    observed: dict[str, dict[str, Any] | None],
    secret: dict[str, Any] | None,
    pods: list[dict[str, Any]],
    server: ServerView,
    now: datetime,
) -> PoolPlan:
    meta = pool["metadata"]
    name = meta["name"]
    generation = meta.get("generation")
    previous_status = pool.get("status") or {}
    previous = previous_status.get("conditions")
    plan = PoolPlan()

    def conditions(
        ready: tuple[bool, str, str], progressing: tuple[bool, str, str], degraded: tuple[bool, str, str]
    ):
        return [
            condition(READY, *ready, now=now, previous=previous, generation=generation),
            condition(PROGRESSING, *progressing, now=now, previous=previous, generation=generation),
            condition(DEGRADED, *degraded, now=now, previous=previous, generation=generation),
        ]

    base_status: dict[str, Any] = {
        "selector": build.selector_string(name),
        "observedGeneration": generation,
    }

    blocking: tuple[str, str] | None = None
    blocking = (INVALID_SPEC, spec_error or "invalid spec") if spec is None else secret_problem(spec, secret)
    if blocking is not None or spec is None:
        reason, message = blocking or (INVALID_SPEC, "invalid spec")
        plan.status = {
            **base_status,
            "phase": PoolPhase.DEGRADED.value,
            "conditions": conditions(
                (False, reason, message),
                (False, reason, "nothing is applied until this is fixed"),
                (True, reason, message),
            ),
        }
        _warn_on_new_reason(plan, previous, reason, message)
        return plan

    plan.actions = plan_children(desired_children(pool, spec), observed)

    current_pods = [p for p in pods if _ordinal_below(name, p["metadata"]["name"], spec.replicas)]
    ready = sum(1 for p in current_pods if pod_is_ready(p))
    status: dict[str, Any] = {
        **base_status,
        "replicas": len(current_pods),
        "readyReplicas": ready,
    }

    sts = observed.get("StatefulSet")
    observed_replicas = (sts or {}).get("spec", {}).get("replicas")
    if sts is not None and observed_replicas is not None and observed_replicas != spec.replicas:
        plan.events.append(
            Event("Normal", "Scaled", f"Scaling workers from {observed_replicas} to {spec.replicas}")
        )
    elif sts is None:
        plan.events.append(Event("Normal", "Created", f"Creating a StatefulSet of {spec.replicas} workers"))

    if server.error is not None:
        status.update(registeredWorkers=previous_status.get("registeredWorkers", 0))
        status.update(
            busyWorkers=previous_status.get("busyWorkers", 0),
            idleWorkers=previous_status.get("idleWorkers", 0),
        )
        message = f"cannot reach the CodeTether server at {spec.server.url}: {server.error}"
        if server.error_reason != SERVER_UNREACHABLE:
            message = f"the CodeTether server at {spec.server.url} refused the operator: {server.error}"
        degraded = (True, server.error_reason, message)
        ready_condition = (False, server.error_reason, message)
    else:
        registered, busy = worker_counts(name, spec.replicas, server.workers or [])
        status.update(registeredWorkers=registered, busyWorkers=busy, idleWorkers=registered - busy)
        degraded = (False, AS_EXPECTED, "")
        if spec.replicas == 0:
            ready_condition = (True, SCALED_TO_ZERO, "the pool is scaled to zero")
        elif ready < spec.replicas:
            ready_condition = (False, WORKERS_NOT_READY, f"{ready}/{spec.replicas} worker pods are ready")
        elif registered < spec.replicas:
            ready_condition = (
                False,
                WORKERS_NOT_REGISTERED,
                f"{registered}/{spec.replicas} workers are registered with the server",
            )
        else:
            ready_condition = (True, ALL_WORKERS_READY, f"{spec.replicas} workers ready and registered")

    rolling = bool(plan.actions) or len(current_pods) != spec.replicas or ready < spec.replicas
    if rolling:
        changed = ", ".join(f"{a.verb} {a.kind}" for a in plan.actions)
        progressing = (True, ROLLOUT_IN_PROGRESS, changed or f"{ready}/{spec.replicas} worker pods ready")
    else:
        progressing = (False, ROLLOUT_COMPLETE, f"{spec.replicas} worker pods up to date")

    if degraded[0]:
        phase = PoolPhase.DEGRADED
        _warn_on_new_reason(plan, previous, degraded[1], degraded[2])
    elif ready_condition[0]:
        phase = PoolPhase.READY
    else:
        phase = PoolPhase.PROGRESSING
    status["phase"] = phase.value
    status["conditions"] = conditions(ready_condition, progressing, degraded)
    plan.status = status
    return plan


def _warn_on_new_reason(
    plan: PoolPlan | CodebasePlan, previous: list[dict[str, Any]] | None, reason: str, message: str
) -> None:
    """One Warning per failure, not one per resync: only when Degraded turns on or changes reason."""
    old = find_condition(previous, DEGRADED)
    if old is None or old.get("status") != "True" or old.get("reason") != reason:
        plan.events.append(Event("Warning", reason, message))


# --------------------------------------------------------------------------- codebases


@dataclass(frozen=True)
class Registration:
    """One registration to make on the server."""

    worker_id: str
    body: CodebaseCreate


@dataclass(frozen=True)
class PreviousServer:
    """Registrations left on the server a codebase used before ``spec.server.url`` changed."""

    url: str
    auth_secret_ref: SecretKeyRef | None
    ids: list[str]


@dataclass
class CodebasePlan:
    register: list[Registration] = field(default_factory=list)
    deregister: list[str] = field(default_factory=list)  # server codebase ids
    # Removed (best effort) once the registrations on the current server are made.
    previous_server: PreviousServer | None = None
    wake: list[str] = field(default_factory=list)  # other Codebases to reconcile now
    status: dict[str, Any] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    placed_on: list[str] = field(default_factory=list)


def server_codebase_id(namespace: str, name: str) -> str:
    """Deterministic, so registering again is an idempotent upsert on the server."""
    candidate = f"{namespace}.{name}"
    if len(candidate) <= 200:
        return candidate
    digest = hashlib.sha256(candidate.encode()).hexdigest()[:16]
    return f"{candidate[:180]}.{digest}"


def codebase_path(spec: CodebaseSpec, pool_spec: PoolSpec, name: str) -> str:
    if spec.path:
        return spec.path
    return f"{pool_spec.storage.mount_path.rstrip('/')}/{name}"


def choose_worker(pool_name: str, replicas: int, counts: dict[str, int], ready_pods: set[str]) -> str | None:
    """Spread: the pod with the fewest codebases; ready pods first on a tie; then the lowest ordinal."""
    if replicas <= 0:
        return None
    candidates = [build.pod_name(pool_name, i) for i in range(replicas)]
    return min(
        candidates, key=lambda pod: (counts.get(pod, 0), pod not in ready_pods, ordinal_of(pool_name, pod))
    )


@dataclass(frozen=True)
class GlobalClaim:
    """A live Codebase with ``global: true`` for a pool, as the operator's index holds it."""

    created: str  # metadata.creationTimestamp (RFC 3339 in UTC: sorts in time order)
    name: str
    workers: tuple[str, ...] = ()


def global_owner(claims: list[GlobalClaim]) -> GlobalClaim | None:
    """The one global codebase a pool gets: the oldest; the name breaks a tie."""
    return min(claims, key=lambda c: (c.created, c.name), default=None)


def codebases_to_wake(
    pool_name: str,
    replicas: int,
    placed: list[tuple[str, str]],
    claims: list[GlobalClaim],
    *,
    server_url: str | None = None,
    registered_on: list[tuple[str, str]] | None = None,
) -> list[str]:
    """Codebases a change of the pool leaves wrongly registered, so they are reconciled now.

    ``placed`` is (codebase, pod) for every codebase placed on one pod of the pool: those on a pod
    the pool no longer has. The pool's global codebase: when it is not on exactly the pods the pool
    has. ``registered_on`` is (codebase, server URL) from their status: those on another server.
    """
    wake = {name for name, pod in placed if not _ordinal_below(pool_name, pod, replicas)}
    if server_url is not None:
        wake.update(name for name, url in registered_on or [] if url != server_url)
    owner = global_owner(claims)
    if owner is not None and list(owner.workers) != [build.pod_name(pool_name, i) for i in range(replicas)]:
        wake.add(owner.name)
    return sorted(wake)


@dataclass(frozen=True)
class CodebaseServerView:
    """What the server has for this codebase: the ids it knows (None: could not ask)."""

    known_ids: frozenset[str] | None = None
    error: str | None = None
    error_reason: str = SERVER_UNREACHABLE


def plan_codebase(
    codebase: dict[str, Any],
    spec: CodebaseSpec | None,
    spec_error: str | None,
    *,
    pool: dict[str, Any] | None,
    pool_spec: PoolSpec | None,
    counts: dict[str, int],
    ready_pods: set[str],
    server: CodebaseServerView,
    server_url: str | None,
    now: datetime,
    global_claims: list[GlobalClaim] | None = None,
) -> CodebasePlan:
    """``global_claims``: the live global codebases of the pool (this one included or not)."""
    meta = codebase["metadata"]
    name, namespace = meta["name"], meta["namespace"]
    generation = meta.get("generation")
    status = dict(codebase.get("status") or {})
    previous = status.get("conditions")
    plan = CodebasePlan()

    def fail(reason: str, message: str, *, phase: CodebasePhase = CodebasePhase.FAILED) -> CodebasePlan:
        plan.status = {
            **_kept(status),
            "phase": phase.value,
            "observedGeneration": generation,
            "conditions": [
                condition(READY, False, reason, message, now=now, previous=previous, generation=generation),
                condition(DEGRADED, True, reason, message, now=now, previous=previous, generation=generation),
            ],
        }
        _warn_on_new_reason(plan, previous, reason, message)
        return plan

    if spec is None:
        return fail(INVALID_SPEC, spec_error or "invalid spec")
    if pool is None:
        return fail(
            POOL_NOT_FOUND, f"CodetetherWorkerPool {spec.pool!r} (spec.pool) does not exist in {namespace}"
        )
    if pool_spec is None:
        return fail(
            POOL_INVALID, f"CodetetherWorkerPool {spec.pool!r} has an invalid spec; see its conditions"
        )

    replicas = pool_spec.replicas
    moved_from = status.get("serverUrl")
    if not moved_from or moved_from == server_url:
        moved_from = None

    def clean_up(ids: list[str]) -> None:
        """Registrations to remove: from the server they are on, which a URL change left behind."""
        if moved_from is None:
            plan.deregister = ids
        elif ids:
            plan.previous_server = PreviousServer(moved_from, secret_ref_from_status(status), ids)

    owner = global_owner(global_claims or []) if spec.global_ else None
    if owner is not None and owner.name != name:
        owners_ids = {global_codebase_id(build.pod_name(spec.pool, i)) for i in range(replicas)}
        # The owner's registrations share this one's ids (global-<pod>): never remove those.
        clean_up([cid for cid in _registered_ids(status) if cid not in owners_ids])
        status = {**status, "codebaseId": None, "worker": None, "workers": [], "serverUrl": server_url}
        return fail(
            GLOBAL_CONFLICT,
            f"pool {spec.pool!r} already has a global codebase, {owner.name!r} (the oldest one wins); "
            f"this one registers nothing while {owner.name!r} exists",
        )

    targets: list[str]
    explicit = spec.placement is not None and (
        spec.placement.ordinal is not None or spec.placement.pod is not None
    )
    if spec.global_:
        targets = [build.pod_name(spec.pool, i) for i in range(replicas)]
    elif explicit:
        assert spec.placement is not None
        if spec.placement.pod is not None:
            ordinal = ordinal_of(spec.pool, spec.placement.pod)
            if ordinal is None:
                return fail(
                    POD_NOT_IN_POOL,
                    f"spec.placement.pod {spec.placement.pod!r} is not a pod of pool {spec.pool!r} "
                    f"(expected {spec.pool}-<ordinal>)",
                )
        else:
            ordinal = spec.placement.ordinal
        assert ordinal is not None
        if ordinal >= replicas:
            return fail(
                ORDINAL_OUT_OF_RANGE,
                f"spec.placement ordinal {ordinal} is beyond pool {spec.pool!r} "
                f"(replicas: {replicas}, ordinals 0..{replicas - 1})",
            )
        targets = [build.pod_name(spec.pool, ordinal)]
    else:
        current = status.get("worker")
        current_ordinal = ordinal_of(spec.pool, current) if current else None
        if current and current_ordinal is not None and current_ordinal < replicas:
            targets = [current]
        else:
            chosen = choose_worker(spec.pool, replicas, counts, ready_pods)
            targets = [chosen] if chosen else []
            if current and chosen:
                plan.events.append(
                    Event(
                        "Normal",
                        "Replaced",
                        f"pod {current} no longer exists (pool {spec.pool} has {replicas} replicas); moved to {chosen}",
                    )
                )

    if not targets:
        clean_up(_registered_ids(status))
        return fail(NO_WORKERS, f"pool {spec.pool!r} has no pods (replicas: 0)", phase=CodebasePhase.PENDING)

    display_name = spec.name or name
    path = codebase_path(spec, pool_spec, name)
    git_url = spec.git.url if spec.git else None
    git_ref = spec.git.ref if spec.git else None
    if spec.global_:
        wanted_ids = {global_codebase_id(pod): pod for pod in targets}
        registrations = [
            Registration(
                pod,
                CodebaseCreate(
                    name=display_name,
                    path=path,
                    description=spec.description,
                    worker_id=pod,
                    codebase_id="global",
                    git_url=git_url,
                    git_ref=git_ref,
                ),
            )
            for pod in targets
        ]
    else:
        codebase_id = status.get("codebaseId") or server_codebase_id(namespace, name)
        if codebase_id.startswith("global-"):
            codebase_id = server_codebase_id(namespace, name)  # was global before the spec changed
        wanted_ids = {codebase_id: targets[0]}
        registrations = [
            Registration(
                targets[0],
                CodebaseCreate(
                    name=display_name,
                    path=path,
                    description=spec.description,
                    worker_id=targets[0],
                    codebase_id=codebase_id,
                    git_url=git_url,
                    git_ref=git_ref,
                ),
            )
        ]

    stale = [cid for cid in _registered_ids(status) if cid not in wanted_ids]
    rivals = sorted(c.name for c in global_claims or [] if c.name != name)
    if not spec.global_ and status.get("workers") and rivals:
        # No longer global while another global codebase lives: global-<pod> become its registrations.
        shared = {global_codebase_id(pod) for pod in status["workers"]}
        stale = [cid for cid in stale if cid not in shared]
        plan.wake = rivals
    spec_changed = status.get("observedGeneration") != generation or status.get("serverUrl") != server_url
    placement_changed = sorted(_assigned(status)) != sorted(targets)

    if server.error is not None:
        plan.placed_on = targets
        message = f"cannot reach the CodeTether server at {server_url}: {server.error}"
        if server.error_reason != SERVER_UNREACHABLE:
            message = f"the CodeTether server at {server_url} refused the operator: {server.error}"
        return fail(server.error_reason, message, phase=CodebasePhase(status.get("phase") or "Pending"))

    known = server.known_ids or frozenset()
    missing = [r for r, cid in zip(registrations, wanted_ids, strict=True) if cid not in known]
    if spec_changed or placement_changed or status.get("phase") != CodebasePhase.REGISTERED.value:
        plan.register = registrations
    else:
        plan.register = missing
        if missing and status.get("phase") == CodebasePhase.REGISTERED.value:
            plan.events.append(
                Event("Normal", "Reregistered", "the server had lost this codebase; registered it again")
            )
    if moved_from is None:
        plan.deregister = stale
    else:  # everything the status lists is on the previous server; the new one gets registrations
        clean_up(_registered_ids(status))
    plan.placed_on = targets

    auth = pool_spec.server.auth_secret_ref
    new_status: dict[str, Any] = {
        "phase": CodebasePhase.REGISTERED.value,
        "serverUrl": server_url,
        "authSecretRef": auth.model_dump(by_alias=True) if auth else None,
        "observedGeneration": generation,
    }
    if spec.global_:
        new_status.update(
            codebaseId=None, worker=None, workers=sorted(targets, key=lambda p: ordinal_of(spec.pool, p) or 0)
        )
        message = f"registered as the global codebase of {len(targets)} pods of {spec.pool}"
    else:
        new_status.update(codebaseId=next(iter(wanted_ids)), worker=targets[0], workers=[])
        message = f"registered for worker {targets[0]}"
    new_status["conditions"] = [
        condition(READY, True, REGISTERED, message, now=now, previous=previous, generation=generation),
        condition(DEGRADED, False, AS_EXPECTED, "", now=now, previous=previous, generation=generation),
    ]
    if status.get("phase") != CodebasePhase.REGISTERED.value or placement_changed:
        plan.events.append(Event("Normal", "Registered", message))
    plan.status = new_status
    return plan


def _kept(status: dict[str, Any]) -> dict[str, Any]:
    return {
        k: status[k] for k in ("codebaseId", "worker", "workers", "serverUrl", "authSecretRef") if k in status
    }


def _assigned(status: dict[str, Any]) -> list[str]:
    if status.get("workers"):
        return list(status["workers"])
    return [status["worker"]] if status.get("worker") else []


def _registered_ids(status: dict[str, Any]) -> list[str]:
    if status.get("workers"):
        return [global_codebase_id(pod) for pod in status["workers"]]
    return [status["codebaseId"]] if status.get("codebaseId") else []


def registered_ids(status: dict[str, Any]) -> list[str]:
    """Server ids a Codebase's status says are registered (what its finalizer removes)."""
    return _registered_ids(status)


def ids_to_remove_on_delete(status: dict[str, Any], name: str, claims: list[GlobalClaim]) -> list[str]:
    """What a deleted Codebase's finalizer removes from the server.

    ``global-<pod>`` ids are shared by every global codebase of the pool: while another live one
    exists, they are its registrations (it re-registers them as its own), so they stay.
    """
    ids = _registered_ids(status)
    if any(claim.name != name for claim in claims):
        shared = {global_codebase_id(pod) for pod in status.get("workers") or []}
        ids = [cid for cid in ids if cid not in shared]
    return ids


@dataclass(frozen=True)
class DeletionDecision:
    release: bool  # remove the finalizer now
    warning: str | None = None  # a Warning Event to leave behind


def plan_codebase_deletion(
    *,
    ids: list[str],
    server_error: str | None,
    pool_exists: bool,
    seconds_deleting: float,
    give_up_after: float,
) -> DeletionDecision:
    """The finalizer never wedges: it lets go once removal worked, or cannot work, or took too long."""
    if not ids or server_error is None:
        return DeletionDecision(release=True)
    if not pool_exists:
        return DeletionDecision(
            release=True,
            warning=f"pool is gone and the server is unreachable ({server_error}); "
            f"registrations {', '.join(ids)} may remain on the server",
        )
    if seconds_deleting >= give_up_after:
        return DeletionDecision(
            release=True,
            warning=f"could not remove registrations {', '.join(ids)} from the server for "
            f"{int(seconds_deleting)}s ({server_error}); released the finalizer, they may remain",
        )
    return DeletionDecision(release=False)


def secret_ref_from_status(status: dict[str, Any]) -> SecretKeyRef | None:
    raw = status.get("authSecretRef")
    return SecretKeyRef.model_validate(raw) if raw else None
