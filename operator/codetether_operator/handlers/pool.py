"""CodetetherWorkerPool: the StatefulSet, Service, ConfigMap and PDB, and the pool's status."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from codetether_operator import build, metrics
from codetether_operator.handlers.codebase import GLOBALS_INDEX, INDEX, SERVERS_INDEX
from codetether_operator.handlers.common import (
    SERVER_ERRORS,
    now,
    plain,
    post_events,
    server_error,
    wake_codebases,
)
from codetether_operator.kube import Conflict, KubeError, Unreachable
from codetether_operator.models import (
    GROUP,
    POOL_PLURAL,
    VERSION,
    PoolSpec,
    SpecError,
    check_pool_name,
    parse_pool_spec,
)
from codetether_operator.plan import (
    APPLY_FAILED,
    ChildAction,
    Event,
    PoolPlan,
    ServerView,
    codebases_to_wake,
    patch_for,
    plan_pool,
)
from codetether_operator.runtime import Runtime

CHILD_KINDS = ("ConfigMap", "Service", "PodDisruptionBudget", "StatefulSet")


def _child_name(kind: str, pool_name: str) -> str:
    return build.config_map_name(pool_name) if kind == "ConfigMap" else pool_name


class PoolHandlers:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    def register(self, registry: Any) -> None:
        import kopf

        resource = (GROUP, VERSION, POOL_PLURAL)
        kopf.on.resume(*resource, registry=registry, backoff=2)(cast(Any, self.pool_resume))
        kopf.on.create(*resource, registry=registry, backoff=2)(cast(Any, self.pool_create))
        kopf.on.update(*resource, registry=registry, backoff=2)(cast(Any, self.pool_update))
        kopf.on.delete(*resource, registry=registry, optional=True)(cast(Any, self.pool_delete))
        kopf.timer(
            *resource,
            registry=registry,
            interval=self.rt.settings.pool_resync_seconds,
            initial_delay=self.rt.settings.pool_resync_seconds,
            idle=None,
        )(cast(Any, self.pool_timer))

    async def pool_resume(self, **kwargs: Any) -> None:
        await self.reconcile(**kwargs)

    async def pool_create(self, **kwargs: Any) -> None:
        await self.reconcile(**kwargs)

    async def pool_update(self, **kwargs: Any) -> None:
        await self.reconcile(**kwargs)

    async def pool_timer(self, **kwargs: Any) -> None:
        await self.reconcile(**kwargs)

    async def pool_delete(self, uid: str, namespace: str, name: str, **_: Any) -> None:
        # Children go with the pool through their owner references; nothing to release here.
        self.rt.pool_phases.set(f"{namespace}/{name}", None)
        self.rt.drop_lock(uid)

    # ------------------------------------------------------------------ reconcile

    async def reconcile(
        self,
        body: Any,
        meta: Any,
        spec: Any,
        status: Any,
        namespace: str,
        name: str,
        uid: str,
        patch: Any,
        **kwargs: Any,
    ) -> None:
        async with self.rt.lock(uid):
            with metrics.timed("pool") as outcome:
                pool = {
                    "metadata": {
                        "name": name,
                        "namespace": namespace,
                        "uid": uid,
                        "generation": meta.get("generation"),
                    },
                    "status": plain(status),
                }
                plan, parsed = await self._observe_and_plan(pool, plain(spec))
                failure = await self._apply(plan.actions)
                if failure is not None:
                    plan = _with_apply_failure(plan, failure)
                patch.status.update(plan.status)
                post_events(body, plan.events)
                phase = plan.status.get("phase")
                self.rt.pool_phases.set(f"{namespace}/{name}", phase)
                if phase == "Degraded":
                    outcome["result"] = "degraded"
        if parsed is not None:
            # Codebases on pods this pool no longer has, its global one when off by some pods, and
            # those registered on another server are reconciled now instead of at their next resync.
            key = (namespace, name)
            placed = list((kwargs.get(INDEX) or {}).get(key, []))
            claims = list((kwargs.get(GLOBALS_INDEX) or {}).get(key, []))
            registered_on = list((kwargs.get(SERVERS_INDEX) or {}).get(key, []))
            stale = codebases_to_wake(
                name,
                parsed.replicas,
                placed,
                claims,
                server_url=self.rt.clients.url_for(parsed.server.url),
                registered_on=registered_on,
            )
            await wake_codebases(self.rt, namespace, stale, f"pool-{uid}-generation-{meta.get('generation')}")

    async def _observe_and_plan(
        self, pool: dict[str, Any], raw_spec: dict[str, Any]
    ) -> tuple[PoolPlan, PoolSpec | None]:
        name, namespace = pool["metadata"]["name"], pool["metadata"]["namespace"]
        spec: PoolSpec | None
        try:
            check_pool_name(name)
            spec = parse_pool_spec(raw_spec)
            spec_error = None
        except SpecError as exc:
            spec, spec_error = None, str(exc)
        observed: dict[str, dict[str, Any] | None] = {}
        secret = None
        pods: list[dict[str, Any]] = []
        server = ServerView(workers=[])
        if spec is not None:
            kube = self.rt.kube
            ref = spec.server.auth_secret_ref
            results = await asyncio.gather(
                *(kube.get_child(kind, namespace, _child_name(kind, name)) for kind in CHILD_KINDS),
                kube.list_pods(namespace, build.selector_labels(name)),
                kube.get_secret(namespace, ref.name) if ref else asyncio.sleep(0, None),
            )
            observed = {
                kind: cast(dict[str, Any] | None, r) for kind, r in zip(CHILD_KINDS, results, strict=False)
            }
            pods = cast(list[dict[str, Any]], results[len(CHILD_KINDS)])
            secret = cast(dict[str, Any] | None, results[len(CHILD_KINDS) + 1])
            server = await self._server_view(namespace, spec)
        plan = plan_pool(
            pool, spec, spec_error, observed=observed, secret=secret, pods=pods, server=server, now=now()
        )
        return plan, spec

    async def _server_view(self, namespace: str, spec: PoolSpec) -> ServerView:
        try:
            client = await self.rt.clients.client(namespace, spec.server.url, spec.server.auth_secret_ref)
            return ServerView(workers=await client.list_workers())
        except SERVER_ERRORS as exc:
            reason, message = server_error(exc, "list_workers")
            return ServerView(error=message, error_reason=reason)

    async def _apply(self, actions: list[ChildAction]) -> str | None:
        """Apply in order; stop at the first refusal and say what it was (None: all applied)."""
        import kopf

        kube = self.rt.kube
        for action in actions:
            try:
                if action.verb == "create":
                    try:
                        await kube.create_child(action.body)
                    except Conflict:
                        # Created meanwhile (a parallel handler, a previous run, or a user): adopt it.
                        await kube.patch_child(
                            action.kind, action.namespace, action.name, patch_for(action.body)
                        )
                else:
                    await kube.patch_child(action.kind, action.namespace, action.name, action.body)
            except Unreachable as exc:
                raise kopf.TemporaryError(f"Kubernetes API unreachable: {exc}", delay=5) from exc
            except KubeError as exc:
                if exc.status >= 500 or exc.status == 429:
                    raise kopf.TemporaryError(f"{action.verb} {action.kind}: {exc}", delay=5) from exc
                return f"{action.verb} {action.kind} {action.name}: {exc.message}"
        return None


def _with_apply_failure(plan: PoolPlan, failure: str) -> PoolPlan:
    status = dict(plan.status)
    conditions = []
    for item in status.get("conditions", []):
        if item["type"] == "Degraded":
            item = {**item, "status": "True", "reason": APPLY_FAILED, "message": failure}
        conditions.append(item)
    status["conditions"] = conditions
    status["phase"] = "Degraded"
    return PoolPlan(
        actions=plan.actions, status=status, events=[*plan.events, Event("Warning", APPLY_FAILED, failure)]
    )
