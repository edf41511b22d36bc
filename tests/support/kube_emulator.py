"""A Kubernetes API for tests: kmock 0.8's emulator, extended where it falls short of an API server.

What kmock 0.8 lacks and this adds (all known gaps listed in issue 4):

* ``metadata.uid``, ``resourceVersion``, ``generation`` (bumped on spec changes only) and
  ``creationTimestamp`` stamped on every write; ``generateName`` honoured; the namespace from the
  URL put into the body, so namespaced watches see the object;
* ``/api/v1/namespaces`` (list, watch, get, create, delete), which kmock answers with a 500;
  deleting a namespace deletes what is in it (finalizers honoured), refuses new objects in it, and
  removes it once empty;
* the ``status`` subresource: ``PATCH .../status`` changes only ``status``, and a patch of the
  object itself leaves ``status`` alone, as for CRDs with ``subresources.status``;
* equality ``labelSelector`` on lists;
* CRDs: creating a CustomResourceDefinition makes its resource discoverable, as in a real cluster.

Still absent (tests must not rely on them): PUT, server-side apply, the scale subresource, garbage
collection of owned objects, controllers (no StatefulSet creates pods: tests create them), schema
validation and defaulting.

It runs in a background thread with its own event loop, so test code can call the synchronous
``kubernetes`` client while an operator runs in the test's loop. ``kubeconfig()`` writes a
kubeconfig pointing at it: the same tests run against a real cluster with another kubeconfig.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime
import itertools
import json
import threading
import uuid
from pathlib import Path
from typing import Any

import aiohttp.web
import yaml
from kmock import KubernetesEmulator, RawHandler, ResourceInfo, Server, resource
from kmock._internal import enums, rendering
from kmock._internal.k8s import KubernetesError, KubernetesObjectConflictError, KubernetesObjectNotFoundError

_ANNOTATIONS_NO_GENERATION = ("metadata", "status")


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _DirectDispatch(RawHandler):  # type: ignore[misc]
    """Serve Kubernetes verbs straight from the emulator's state.

    kmock matches every request against its DSL filters by replaying the log of all past requests,
    which is quadratic: hundreds of objects take minutes. Nothing here uses the DSL, so the verbs go
    directly to the emulator's handlers and the request log is kept short.
    """

    __slots__ = ()
    _REQUEST_LOG_LIMIT = 200

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        handlers: dict[Any, Any] = {
            enums.action.LIST: self._serve_list,  # type: ignore[attr-defined]
            enums.action.FETCH: self._serve_fetch,  # type: ignore[attr-defined]
            enums.action.CREATE: self._serve_create,  # type: ignore[attr-defined]
            enums.action.UPDATE: self._serve_update,  # type: ignore[attr-defined]
            enums.action.DELETE: self._serve_delete,  # type: ignore[attr-defined]
        }
        if len(self._requests) > self._REQUEST_LOG_LIMIT:
            del self._requests[:]
        if request.resource is None or request.resource.plural is None:
            return await super()._handle(request)  # type: ignore[no-any-return]
        if request.action == enums.action.WATCH:
            response = aiohttp.web.StreamResponse()
            response.content_type = "application/json"
            await response.prepare(request._raw_request)
            async for item in self._serve_watch(request):  # type: ignore[attr-defined]
                if isinstance(item, dict):
                    await response.write(json.dumps(item).encode() + b"\n")
            return response
        handler = handlers.get(request.action)
        if handler is None:
            return await super()._handle(request)  # type: ignore[no-any-return]
        payload = await handler(request)
        return aiohttp.web.json_response(
            payload, status=201 if request.action == enums.action.CREATE else 200
        )


class StampingEmulator(KubernetesEmulator, _DirectDispatch):  # type: ignore[misc]
    """kmock's emulator with the API-server behaviour kopf and the operator rely on."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._versions = itertools.count(1)
        self._namespaces: dict[str, dict[str, Any]] = {}
        self._namespace_watchers: list[asyncio.Queue[dict[str, Any]]] = []
        self._status_subresources: set[tuple[str, str, str]] = set()
        self._namespace_reaper: asyncio.Future[None] | None = None
        for core in ("v1/pods", "v1/secrets", "v1/configmaps", "v1/services", "v1/events"):
            self.resources[core] = ResourceInfo(
                namespaced=True, verbs={"get", "list", "watch", "create", "patch", "delete"}
            )
        self.resources["v1/namespaces"] = ResourceInfo(
            kind="Namespace", namespaced=False, verbs={"get", "list", "watch", "create", "delete"}
        )
        self.resources["apps/v1/statefulsets"] = ResourceInfo(
            kind="StatefulSet", namespaced=True, subresources={"status", "scale"}
        )
        self.resources["policy/v1/poddisruptionbudgets"] = ResourceInfo(
            kind="PodDisruptionBudget", namespaced=True
        )
        self.resources["events.k8s.io/v1/events"] = ResourceInfo(kind="Event", namespaced=True)
        self.resources["apiextensions.k8s.io/v1/customresourcedefinitions"] = ResourceInfo(
            kind="CustomResourceDefinition", namespaced=False
        )
        self.add_namespace("default")

    # ------------------------------------------------------------------ namespaces

    def add_namespace(self, name: str) -> dict[str, Any]:
        body = self._namespaces.get(name)
        if body is None:
            body = {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": self._fresh_meta({"name": name}),
                "status": {"phase": "Active"},
            }
            self._namespaces[name] = body
            for queue in self._namespace_watchers:
                queue.put_nowait({"type": "ADDED", "object": body})
        return body

    async def _serve_namespaces(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        parts = raw.path.strip("/").split("/")  # api v1 namespaces [name]
        if raw.method == "POST":
            data = await raw.json()
            name = data.get("metadata", {}).get("name")
            if name in self._namespaces:
                return _status(409, "AlreadyExists", f'namespaces "{name}" already exists')
            return aiohttp.web.json_response(self.add_namespace(name), status=201)
        if raw.method == "DELETE" and len(parts) == 4:
            return await self._delete_namespace(parts[3])
        if len(parts) == 4:
            found = self._namespaces.get(parts[3])
            if found is None:
                return _status(404, "NotFound", f'namespaces "{parts[3]}" not found')
            return aiohttp.web.json_response(found)
        if raw.query.get("watch") == "true":
            response = aiohttp.web.StreamResponse()
            response.content_type = "application/json"
            await response.prepare(raw)
            queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
            self._namespace_watchers.append(queue)
            try:
                for body in list(self._namespaces.values()):
                    await response.write(json.dumps({"type": "ADDED", "object": body}).encode() + b"\n")
                while True:
                    event = await queue.get()
                    await response.write(json.dumps(event).encode() + b"\n")
            finally:
                self._namespace_watchers.remove(queue)
        return aiohttp.web.json_response(
            {
                "apiVersion": "v1",
                "kind": "NamespaceList",
                "metadata": {"resourceVersion": str(next(self._versions))},
                "items": list(self._namespaces.values()),
            }
        )

    async def _delete_namespace(self, name: str) -> aiohttp.web.StreamResponse:
        """Like the namespace controller: delete everything in it, drop it once it is empty."""
        body = self._namespaces.get(name)
        if body is None:
            return _status(404, "NotFound", f'namespaces "{name}" not found')
        body["metadata"]["deletionTimestamp"] = body["metadata"].get("deletionTimestamp") or _now()
        body["status"] = {"phase": "Terminating"}
        await self._delete_contents(name)
        if self._namespace_reaper is None or self._namespace_reaper.done():
            self._namespace_reaper = asyncio.ensure_future(self._reap_namespaces())
        return aiohttp.web.json_response(body)

    async def _delete_contents(self, namespace: str) -> None:
        async with self._lock:
            for (res, ns, _), obj in list(self._objects.items()):
                if ns != namespace or obj.deleted or obj.get("metadata", {}).get("deletionTimestamp"):
                    continue
                if obj.get("metadata", {}).get("finalizers"):
                    obj.patch(
                        {
                            "metadata": {
                                "deletionTimestamp": _now(),
                                "resourceVersion": str(next(self._versions)),
                            }
                        }
                    )
                    await self._buses[res].put({"type": "MODIFIED", "object": obj.raw})
                else:
                    raw = obj.raw
                    obj.delete()
                    await self._buses[res].put({"type": "DELETED", "object": raw})

    async def _reap_namespaces(self) -> None:
        while any(b["metadata"].get("deletionTimestamp") for b in self._namespaces.values()):
            for name, body in list(self._namespaces.items()):
                if not body["metadata"].get("deletionTimestamp"):
                    continue
                if not any(ns == name and not obj.deleted for (_, ns, _), obj in self._objects.items()):
                    del self._namespaces[name]
                    for queue in self._namespace_watchers:
                        queue.put_nowait({"type": "DELETED", "object": body})
            await asyncio.sleep(0.1)

    def namespace_exists(self, name: str) -> bool:
        return name in self._namespaces

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        parts = raw_request.path.strip("/").split("/")
        if parts[:3] == ["api", "v1", "namespaces"] and len(parts) <= 4:
            await raw_request.read()
            return await self._serve_namespaces(raw_request)
        return await super().__call__(raw_request)  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ stamping

    def _fresh_meta(self, meta: dict[str, Any]) -> dict[str, Any]:
        meta = dict(meta)
        meta.setdefault("uid", str(uuid.uuid4()))
        meta["resourceVersion"] = str(next(self._versions))
        meta.setdefault("creationTimestamp", _now())
        meta.setdefault("generation", 1)
        return meta

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        if request.resource is None:
            return await super()._handle(request)  # type: ignore[no-any-return]
        if request.action == enums.action.CREATE and isinstance(request.data, dict):
            terminating = self._namespaces.get(request.namespace or "", {}).get("metadata", {})
            if terminating.get("deletionTimestamp"):
                raise KubernetesError(
                    status=403,
                    reason="Forbidden",
                    message=f"namespace {request.namespace} is being terminated",
                )
            data = copy.deepcopy(request.data)
            meta = data.setdefault("metadata", {})
            if request.namespace:
                meta["namespace"] = request.namespace
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
            data["metadata"] = self._fresh_meta(meta)
            object.__setattr__(request, "data", data)
            if data.get("kind") == "CustomResourceDefinition":
                self._declare_crd(data)
        elif request.action == enums.action.UPDATE and request.name is not None:
            key = (request.resource, request.namespace, request.name)
            async with self._lock:
                current = self._objects[key] if key in self._objects else None  # noqa: SIM401 (no .get)
                if current is None or current.deleted:
                    raise KubernetesObjectNotFoundError()
                object.__setattr__(request, "data", self._stamped_patch(request, dict(current.raw)))
        return await super()._handle(request)  # type: ignore[no-any-return]

    def _stamped_patch(self, request: rendering.Request, current: dict[str, Any]) -> Any:
        """The patch kmock will merge, plus the metadata an API server would change with it."""
        patch = request.data
        if isinstance(patch, list):  # JSON patch: apply it here, then send the result as a merge
            import jsonpatch

            for op in patch:
                if (
                    op.get("op") == "test"
                    and op.get("path") == "/metadata/resourceVersion"
                    and current.get("metadata", {}).get("resourceVersion") != op.get("value")
                ):
                    raise KubernetesObjectConflictError()
            updated = jsonpatch.apply_patch(current, patch, in_place=False)
            patch = _diff_as_merge(current, updated)
        patch = dict(patch or {})
        res = request.resource
        has_status = (res.group, res.version, res.plural) in self._status_subresources
        if request.subresource == "status":
            patch = {k: v for k, v in patch.items() if k in ("status", "metadata")}
            patch["metadata"] = {}
        elif has_status:
            patch.pop("status", None)
        meta = dict(patch.get("metadata") or {})
        for fixed in ("uid", "creationTimestamp", "generation", "namespace", "name"):
            meta.pop(fixed, None)
        meta["resourceVersion"] = str(next(self._versions))
        spec_changed = any(k not in _ANNOTATIONS_NO_GENERATION and current.get(k) != patch[k] for k in patch)
        if spec_changed:
            meta["generation"] = int(current.get("metadata", {}).get("generation", 1)) + 1
        patch["metadata"] = meta
        return patch

    def _declare_crd(self, crd: dict[str, Any]) -> None:
        spec = crd["spec"]
        for version in spec["versions"]:
            res = resource(spec["group"], version["name"], spec["names"]["plural"])
            subresources = set(version.get("subresources", {}))
            self.resources[res] = ResourceInfo(
                kind=spec["names"]["kind"],
                singular=spec["names"].get("singular"),
                shortnames=set(spec["names"].get("shortNames", [])),
                categories=set(spec["names"].get("categories", [])),
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                subresources=subresources,
                verbs={"get", "list", "watch", "create", "patch", "delete"},
            )
            if "status" in subresources:
                self._status_subresources.add((spec["group"], version["name"], spec["names"]["plural"]))

    # ------------------------------------------------------------------ selectors

    async def _serve_list(self, request: rendering.Request) -> rendering.Payload:
        answer = await super()._serve_list(request)
        answer["metadata"] = {"resourceVersion": str(next(self._versions))}
        selector = request.params.get("labelSelector") if request.params else None
        if selector:
            wanted = dict(item.split("=", 1) for item in selector.split(",") if "=" in item)
            answer["items"] = [
                obj
                for obj in answer["items"]
                if all((obj.get("metadata", {}).get("labels") or {}).get(k) == v for k, v in wanted.items())
            ]
        return answer


def _diff_as_merge(old: Any, new: Any) -> Any:
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    patch: dict[str, Any] = {}
    for key in old.keys() | new.keys():
        if key not in new:
            patch[key] = None
        elif key not in old:
            patch[key] = new[key]
        elif old[key] != new[key]:
            patch[key] = _diff_as_merge(old[key], new[key]) if isinstance(new[key], dict) else new[key]
    return patch


def _status(code: int, reason: str, message: str) -> aiohttp.web.Response:
    return aiohttp.web.json_response(
        {
            "apiVersion": "v1",
            "kind": "Status",
            "status": "Failure",
            "code": code,
            "reason": reason,
            "message": message,
        },
        status=code,
    )


class KubeEmulatorThread:
    """The emulator served on a loopback port from a background thread."""

    def __init__(self) -> None:
        self.emulator: StampingEmulator | None = None
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="kube-emulator", daemon=True)
        self._stop: asyncio.Event | None = None
        self._runner: asyncio.Future[None] | None = None

    def start(self) -> KubeEmulatorThread:
        self._thread.start()
        ready = threading.Event()

        async def serve() -> None:
            self._stop = asyncio.Event()
            async with StampingEmulator() as emulator, Server(emulator) as server:
                self.emulator = emulator
                self.url = str(server.url).rstrip("/")
                ready.set()
                await self._stop.wait()

        self._runner = asyncio.run_coroutine_threadsafe(serve(), self._loop)  # type: ignore[assignment]
        if not ready.wait(15):
            raise TimeoutError("the Kubernetes emulator did not start")
        return self

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            if self._runner is not None:
                with contextlib.suppress(Exception):
                    self._runner.result(10)  # type: ignore[call-arg]
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "test", "user": {"token": "emulator"}}],
            "contexts": [
                {
                    "name": "emulator",
                    "context": {"cluster": "emulator", "user": "test", "namespace": namespace},
                }
            ],
            "current-context": "emulator",
        }
        path.write_text(yaml.safe_dump(config))
        return path
