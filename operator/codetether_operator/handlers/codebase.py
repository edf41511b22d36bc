"""Codebase: a registration on the server for one pod of a pool, kept there, removed on delete."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from datetime import datetime
from typing import Any, cast

from codetether_contract import CodetetherClient, NotFoundError
from codetether_operator import build, metrics
from codetether_operator.handlers.common import (
    SERVER_ERRORS,
    now,
    plain,
    post_events,
    server_error,
    wake_codebases,
)
from codetether_operator.models import (
    CODEBASE_PLURAL,
    GROUP,
    VERSION,
    CodebaseSpec,
    PoolSpec,
    SecretKeyRef,
    SpecError,
    parse_codebase_spec,
    parse_pool_spec,
)
from codetether_operator.plan import (
    OLD_SERVER_UNREACHABLE,
    CodebasePlan,
    CodebaseServerView,
    Event,
    GlobalClaim,
    PreviousServer,
    ids_to_remove_on_delete,
    ordinal_of,
    plan_codebase,
    plan_codebase_deletion,
    pod_is_ready,
    registered_ids,
    secret_ref_from_status,
)
from codetether_operator.runtime import Runtime

INDEX = "codebase_workers"
GLOBALS_INDEX = "codebase_globals"
SERVERS_INDEX = "codebase_servers"


def codebase_workers(namespace: str, name: str, spec: Any, status: Any, **_: Any) -> dict[Any, Any]:
    """kopf index: (namespace, pool) -> (codebase, pod) for every placed, non-global codebase."""
    worker = (status or {}).get("worker")
    pool = (spec or {}).get("pool")
    if not worker or not pool or (spec or {}).get("global"):
        return {}  # not None: kopf keeps an entry whose function returns None
    return {(namespace, pool): (name, worker)}


def codebase_globals(
    namespace: str, name: str, spec: Any, meta: Any, status: Any, **_: Any
) -> dict[Any, Any]:
    """kopf index: (namespace, pool) -> GlobalClaim for every live (not deleting) global codebase."""
    pool = (spec or {}).get("pool")
    if not pool or not (spec or {}).get("global") or meta.get("deletionTimestamp"):
        return {}  # not None: kopf keeps an entry whose function returns None
    workers = tuple((status or {}).get("workers") or ())
    return {(namespace, pool): GlobalClaim(meta.get("creationTimestamp") or "", name, workers)}


def codebase_servers(namespace: str, name: str, spec: Any, status: Any, **_: Any) -> dict[Any, Any]:
    """kopf index: (namespace, pool) -> (codebase, server URL) for every codebase registered somewhere."""
    url = (status or {}).get("serverUrl")
    pool = (spec or {}).get("pool")
    if not url or not pool:
        return {}  # not None: kopf keeps an entry whose function returns None
    return {(namespace, pool): (name, url)}


def global_claims(index: Any, namespace: str, pool: str) -> list[GlobalClaim]:
    return list((index or {}).get((namespace, pool), []))


class CodebaseHandlers:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    def register(self, registry: Any) -> None:
        import kopf

        resource = (GROUP, VERSION, CODEBASE_PLURAL)
        kopf.index(*resource, registry=registry, id=INDEX)(cast(Any, codebase_workers))
        kopf.index(*resource, registry=registry, id=GLOBALS_INDEX)(cast(Any, codebase_globals))
        kopf.index(*resource, registry=registry, id=SERVERS_INDEX)(cast(Any, codebase_servers))
        kopf.on.resume(*resource, registry=registry, backoff=2)(cast(Any, self.codebase_resume))
        kopf.on.create(*resource, registry=registry, backoff=2)(cast(Any, self.codebase_create))
        kopf.on.update(*resource, registry=registry, backoff=2)(cast(Any, self.codebase_update))
        kopf.on.delete(*resource, registry=registry, backoff=2)(cast(Any, self.codebase_delete))
        kopf.timer(
            *resource,
            registry=registry,
            interval=self.rt.settings.codebase_resync_seconds,
            initial_delay=self.rt.settings.codebase_resync_seconds,
        )(cast(Any, self.codebase_timer))

    async def codebase_resume(self, **kwargs: Any) -> None:
        await self.reconcile(**kwargs)

    async def codebase_create(self, **kwargs: Any) -> None:
        await self.reconcile(**kwargs)

    async def codebase_update(self, **kwargs: Any) -> None:
        await self.reconcile(**kwargs)

    async def codebase_timer(self, **kwargs: Any) -> None:
        await self.reconcile(**kwargs)

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
        if meta.get("deletionTimestamp"):
            return  # the delete handler owns it now
        async with self.rt.lock(uid):
            with metrics.timed("codebase") as outcome:
                codebase = {
                    "metadata": {
                        "name": name,
                        "namespace": namespace,
                        "generation": meta.get("generation"),
                        "creationTimestamp": meta.get("creationTimestamp"),
                    },
                    "status": plain(status),
                }
                plan, events = await self._observe_plan_apply(
                    codebase, plain(spec), kwargs.get(INDEX), kwargs.get(GLOBALS_INDEX)
                )
                patch.status.update(plan.status)
                post_events(body, [*plan.events, *events])
                if plan.wake:
                    token = f"released-by-{uid}-generation-{meta.get('generation')}"
                    await wake_codebases(self.rt, namespace, plan.wake, token)
                phase = plan.status.get("phase")
                self.rt.codebase_phases.set(f"{namespace}/{name}", phase)
                if phase != "Registered":
                    outcome["result"] = "degraded"

    async def _observe_plan_apply(
        self, codebase: dict[str, Any], raw_spec: dict[str, Any], index: Any, globals_index: Any
    ) -> tuple[CodebasePlan, list[Event]]:
        name, namespace = codebase["metadata"]["name"], codebase["metadata"]["namespace"]
        status = codebase["status"]
        spec: CodebaseSpec | None
        try:
            spec, spec_error = parse_codebase_spec(raw_spec), None
        except SpecError as exc:
            spec, spec_error = None, str(exc)

        pool: dict[str, Any] | None = None
        pool_spec: PoolSpec | None = None
        ready_pods: set[str] = set()
        server = CodebaseServerView(known_ids=frozenset())
        server_url: str | None = None
        client: CodetetherClient | None = None
        if spec is not None:
            pool = await self.rt.kube.get_pool(namespace, spec.pool)
            if pool is not None:
                try:
                    pool_spec = parse_pool_spec(pool.get("spec") or {})
                except SpecError:
                    pool_spec = None
        if spec is not None and pool_spec is not None:
            server_url = self.rt.clients.url_for(pool_spec.server.url)
            if not spec.global_ and not _has_valid_worker(status, spec, pool_spec):
                pods = await self.rt.kube.list_pods(namespace, build.selector_labels(spec.pool))
                ready_pods = {p["metadata"]["name"] for p in pods if pod_is_ready(p)}
            try:
                client = await self.rt.clients.client(
                    namespace, pool_spec.server.url, pool_spec.server.auth_secret_ref
                )
                server = CodebaseServerView(known_ids=await _known_ids(client, status))
            except SERVER_ERRORS as exc:
                reason, message = server_error(exc, "get_codebase")
                server = CodebaseServerView(error=message, error_reason=reason)

        counts: dict[str, int] = {}
        claims: list[GlobalClaim] = []
        if spec is not None:
            claims = [c for c in global_claims(globals_index, namespace, spec.pool) if c.name != name]
            if spec.global_:
                claims.append(GlobalClaim(codebase["metadata"].get("creationTimestamp") or "", name))
        placed = self.rt.placements.get(namespace, name)
        if spec is not None and placed is not None and placed[0] == spec.pool and not status.get("workers"):
            # A status write still on its way back through the watch: trust what this process decided.
            status = {**status, "worker": placed[1]}
            codebase = {**codebase, "status": status}
        if spec is not None:
            indexed = list((index or {}).get((namespace, spec.pool), []))
            counts = self.rt.placements.counts(namespace, spec.pool, indexed)
        replan = functools.partial(
            plan_codebase,
            codebase,
            spec,
            spec_error,
            pool=pool,
            pool_spec=pool_spec,
            counts=counts,
            ready_pods=ready_pods,
            server_url=server_url,
            global_claims=claims,
        )
        plan = replan(server=server, now=now())
        # Recorded before the next await, so a codebase created at the same moment sees it.
        if spec is not None and not spec.global_ and plan.placed_on:
            self.rt.placements.record(namespace, name, spec.pool, plan.placed_on[0])

        events: list[Event] = []
        if client is not None and (plan.register or plan.deregister or plan.previous_server):
            try:
                for codebase_id in plan.deregister:
                    await _delete(client, codebase_id)
                for registration in plan.register:
                    await client.register_codebase(registration.body)
                if plan.previous_server is not None:
                    events.append(await self._leave_previous_server(namespace, plan.previous_server))
            except SERVER_ERRORS as exc:
                reason, message = server_error(exc, "register_codebase")
                retry_view = CodebaseServerView(error=message, error_reason=reason)
                plan = replan(server=retry_view, now=now())
        return plan, events

    async def _leave_previous_server(self, namespace: str, previous: PreviousServer) -> Event:
        """Best effort, bounded: the first failure ends it (the rest would most likely fail alike)."""
        ids = ", ".join(previous.ids)
        try:
            client = await self.rt.clients.client(namespace, previous.url, previous.auth_secret_ref)
            async with asyncio.timeout(2 * self.rt.settings.server_timeout_seconds):
                for codebase_id in previous.ids:
                    await _delete(client, codebase_id)
        except (*SERVER_ERRORS, TimeoutError) as exc:
            _reason, message = (
                server_error(exc, "delete_codebase")
                if isinstance(exc, SERVER_ERRORS)
                else ("", "no answer in time")
            )
            return Event(
                "Warning",
                OLD_SERVER_UNREACHABLE,
                f"could not remove registrations {ids} from the previous server {previous.url} "
                f"({message}); they may remain there",
            )
        return Event(
            "Normal", "ServerChanged", f"removed registrations {ids} from the previous server {previous.url}"
        )

    # ------------------------------------------------------------------ deletion

    async def codebase_delete(
        self,
        body: Any,
        meta: Any,
        spec: Any,
        status: Any,
        namespace: str,
        name: str,
        uid: str,
        **kwargs: Any,
    ) -> None:
        import kopf

        current = plain(status)
        pool_name = (spec or {}).get("pool", "")
        rivals = global_claims(kwargs.get(GLOBALS_INDEX), namespace, pool_name) if pool_name else []
        rivals = [c for c in rivals if c.name != name]
        ids = ids_to_remove_on_delete(current, name, rivals)
        pool = await self.rt.kube.get_pool(namespace, pool_name) if pool_name else None
        error: str | None = None
        if ids:
            try:
                client = await self._client_for_deletion(namespace, current, pool)
                if client is None:
                    error = "no server is known for this codebase"
                else:
                    for codebase_id in ids:
                        await _delete(client, codebase_id)
            except SERVER_ERRORS as exc:
                _reason, error = server_error(exc, "delete_codebase")
        decision = plan_codebase_deletion(
            ids=ids,
            server_error=error,
            pool_exists=pool is not None,
            seconds_deleting=_seconds_since(meta.get("deletionTimestamp")),
            give_up_after=self.rt.settings.finalizer_timeout_seconds,
        )
        if not decision.release:
            raise kopf.TemporaryError(f"cannot remove the registration yet: {error}", delay=2)
        if decision.warning:
            post_events(body, [Event("Warning", "DeregistrationAbandoned", decision.warning)])
        self.rt.placements.forget(namespace, name)
        self.rt.wakes.pop((namespace, name), None)  # a Codebase made again under this name is new
        self.rt.codebase_phases.set(f"{namespace}/{name}", None)
        self.rt.drop_lock(uid)
        if (spec or {}).get("global") and rivals:
            # The pool's global codebase may be one of those now: let them find out at once.
            await wake_codebases(self.rt, namespace, [c.name for c in rivals], f"released-by-{uid}")

    async def _client_for_deletion(
        self, namespace: str, status: dict[str, Any], pool: dict[str, Any] | None
    ) -> CodetetherClient | None:
        url = status.get("serverUrl")
        ref: SecretKeyRef | None = secret_ref_from_status(status)
        if url is None and pool is not None:
            try:
                pool_spec = parse_pool_spec(pool.get("spec") or {})
            except SpecError:
                return None
            url, ref = pool_spec.server.url, pool_spec.server.auth_secret_ref
        if url is None:
            return None
        return await self.rt.clients.client(namespace, url, ref)


def _has_valid_worker(status: dict[str, Any], spec: CodebaseSpec, pool_spec: PoolSpec) -> bool:
    worker = status.get("worker")
    ordinal = ordinal_of(spec.pool, worker) if worker else None
    return ordinal is not None and ordinal < pool_spec.replicas


async def _known_ids(client: CodetetherClient, status: dict[str, Any]) -> frozenset[str]:
    """The ids the status says are registered that the server still has."""
    known = set()
    for codebase_id in registered_ids(status):
        try:
            await client.get_codebase(codebase_id)
            known.add(codebase_id)
        except NotFoundError:
            pass
    return frozenset(known)


async def _delete(client: CodetetherClient, codebase_id: str) -> None:
    with contextlib.suppress(NotFoundError):  # already gone: what we wanted
        await client.delete_codebase(codebase_id)


def _seconds_since(timestamp: str | None) -> float:
    if not timestamp:
        return 0.0
    try:
        then = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return 0.0
    return max(0.0, (now() - then).total_seconds())
