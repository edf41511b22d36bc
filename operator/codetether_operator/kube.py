"""Every Kubernetes API call the operator's own code makes, in one module.

The ``kubernetes`` package provides configuration (kubeconfig or in-cluster), authentication and
TLS; requests are sent generically and answered as plain dicts, in a thread pool so the event loop
never blocks. ``API_CALLS`` lists each (API group, resource, verbs) used here and ``KOPF_API_CALLS``
what kopf itself needs (watching, patching, Events, peering); ``rbac_rules()`` turns both into the
RBAC rules the Helm chart grants. ``_call`` refuses anything not declared, and a unit test checks
the declaration against the code.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from codetether_operator.models import CODEBASE_PLURAL, GROUP, POOL_PLURAL, VERSION

FIELD_MANAGER = "codetether-operator"
MERGE_PATCH = "application/merge-patch+json"


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str

    def path(self, namespace: str, name: str | None = None, subresource: str | None = None) -> str:
        base = f"/api/{self.version}" if not self.group else f"/apis/{self.group}/{self.version}"
        path = f"{base}/namespaces/{quote(namespace, safe='')}/{self.plural}"
        if name is not None:
            path += f"/{quote(name, safe='')}"
        if subresource is not None:
            path += f"/{subresource}"
        return path


CONFIG_MAPS = Resource("", "v1", "configmaps")
SERVICES = Resource("", "v1", "services")
SECRETS = Resource("", "v1", "secrets")
PODS = Resource("", "v1", "pods")
STATEFUL_SETS = Resource("apps", "v1", "statefulsets")
POD_DISRUPTION_BUDGETS = Resource("policy", "v1", "poddisruptionbudgets")
POOLS = Resource(GROUP, VERSION, POOL_PLURAL)
CODEBASES = Resource(GROUP, VERSION, CODEBASE_PLURAL)

# (group, resource, verbs) of every call below. Keep it in step with the methods (a test checks).
API_CALLS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("", "configmaps", ("get", "create", "patch")),
    ("", "services", ("get", "create", "patch")),
    ("apps", "statefulsets", ("get", "create", "patch")),
    ("policy", "poddisruptionbudgets", ("get", "create", "patch")),
    ("", "pods", ("list",)),
    ("", "secrets", ("get",)),
    (GROUP, POOL_PLURAL, ("get",)),
    (GROUP, CODEBASE_PLURAL, ("patch",)),
)

# What kopf does on the operator's behalf: watch and patch the custom resources (finalizers,
# progress annotations, status), post Events, discover resources, and keep peering records.
KOPF_API_CALLS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (GROUP, POOL_PLURAL, ("list", "watch", "patch")),
    (GROUP, f"{POOL_PLURAL}/status", ("get", "patch")),
    (GROUP, CODEBASE_PLURAL, ("list", "watch", "patch")),
    (GROUP, f"{CODEBASE_PLURAL}/status", ("get", "patch")),
    ("", "events", ("create",)),
    ("events.k8s.io", "events", ("create",)),
    ("", "namespaces", ("list", "watch")),
    ("apiextensions.k8s.io", "customresourcedefinitions", ("list", "watch")),
    ("kopf.dev", "kopfpeerings", ("list", "watch", "patch", "get")),
    ("kopf.dev", "clusterkopfpeerings", ("list", "watch", "patch", "get")),
)


def rbac_rules(calls: Iterable[tuple[str, str, tuple[str, ...]]] | None = None) -> list[dict[str, Any]]:
    """RBAC PolicyRules covering ``API_CALLS`` and ``KOPF_API_CALLS`` (one rule per resource)."""
    merged: dict[tuple[str, str], set[str]] = {}
    for group, resource, verbs in calls if calls is not None else (*API_CALLS, *KOPF_API_CALLS):
        merged.setdefault((group, resource), set()).update(verbs)
    return [
        {"apiGroups": [group], "resources": [resource], "verbs": sorted(verbs)}
        for (group, resource), verbs in sorted(merged.items())
    ]


_DECLARED = {(group, resource, verb) for group, resource, verbs in API_CALLS for verb in verbs}


class KubeError(Exception):
    """The API server answered with an error status."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        self.status = status
        self.reason = reason
        self.message = message
        super().__init__(f"{status} {reason}: {message}")


class NotFound(KubeError):
    pass


class Conflict(KubeError):
    pass


class Unreachable(Exception):
    """No answer from the API server (connection refused, timeout)."""


def _error(status: int, data: bytes) -> KubeError:
    try:
        body = json.loads(data or b"{}")
    except ValueError:
        body = {}
    reason = str(body.get("reason") or "")
    message = str(body.get("message") or data[:300].decode(errors="replace"))
    cls = NotFound if status == 404 else Conflict if status == 409 else KubeError
    return cls(status, reason, message)


def labels_match(labels: dict[str, str] | None, selector: dict[str, str]) -> bool:
    labels = labels or {}
    return all(labels.get(k) == v for k, v in selector.items())


def load_configuration(kubeconfig: str | None = None) -> Any:
    """A ``kubernetes.client.Configuration``: in-cluster, else ``kubeconfig`` / ``$KUBECONFIG`` / ~/.kube/config.

    ``$KUBECONFIG`` is read now, not when the kubernetes package was imported.
    """
    import os

    from kubernetes import client, config

    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        path = kubeconfig or os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
        config.load_kube_config(config_file=path.split(os.pathsep)[0], client_configuration=configuration)
    return configuration


def kopf_login(**_: Any) -> Any:
    """kopf's credentials from the same configuration our own calls use."""
    import kopf

    configuration = load_configuration()
    header = configuration.get_api_key_with_prefix("BearerToken") or configuration.get_api_key_with_prefix(
        "authorization"
    )
    parts = header.split(" ", 1) if header else []
    scheme, token = (
        (None, None) if not parts else (None, parts[0]) if len(parts) == 1 else (parts[0], parts[1])
    )
    return kopf.ConnectionInfo(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        username=configuration.username or None,
        password=configuration.password or None,
        scheme=scheme,
        token=token,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
    )


class Kube:
    """Async facade over the Kubernetes API for the operator's own calls."""

    def __init__(self, api_client: Any = None, *, threads: int = 16, timeout: float = 30.0) -> None:
        from kubernetes import client

        if api_client is None:
            configuration = client.Configuration.get_default_copy()
            configuration.connection_pool_maxsize = threads
            api_client = client.ApiClient(configuration)
        self._api = api_client
        self._timeout = timeout
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="kube")

    @classmethod
    def from_environment(cls, kubeconfig: str | None = None, context: str | None = None) -> Kube:
        """In-cluster service account when running in a pod, else the kubeconfig."""
        from kubernetes import client, config

        configuration = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException:
            config.load_kube_config(
                config_file=kubeconfig, context=context, client_configuration=configuration
            )
        configuration.connection_pool_maxsize = 16
        return cls(client.ApiClient(configuration))

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._api.close()

    # ------------------------------------------------------------------ transport

    def _send(
        self, method: str, path: str, query: dict[str, str], body: Any, content_type: str | None
    ) -> dict[str, Any]:
        import urllib3

        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        serialized = self._api.param_serialize(
            method=method,
            resource_path=path,
            query_params=list(query.items()) or None,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self._api.call_api(*serialized, _request_timeout=(5, self._timeout))
            response.read()
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise Unreachable(f"{method} {path}: {exc}") from exc
        data = response.data or b""
        if not 200 <= response.status < 300:
            raise _error(response.status, data)
        result: dict[str, Any] = json.loads(data) if data else {}
        return result

    async def _call(
        self,
        verb: str,
        resource: Resource,
        namespace: str,
        name: str | None = None,
        *,
        body: Any = None,
        query: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        if (resource.group, resource.plural, verb) not in _DECLARED:
            raise AssertionError(
                f"undeclared API call {verb} {resource.group}/{resource.plural}: add it to API_CALLS"
            )
        method, content_type = {
            "get": ("GET", None),
            "list": ("GET", None),
            "create": ("POST", "application/json"),
            "patch": ("PATCH", MERGE_PATCH),
        }[verb]
        params = dict(query or {})
        if verb in ("create", "patch"):
            params["fieldManager"] = FIELD_MANAGER
        path = resource.path(namespace, name)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, self._send, method, path, params, body, content_type
        )

    # ------------------------------------------------------------------ children of a pool

    _CHILD_RESOURCES = {
        "ConfigMap": CONFIG_MAPS,
        "Service": SERVICES,
        "StatefulSet": STATEFUL_SETS,
        "PodDisruptionBudget": POD_DISRUPTION_BUDGETS,
    }

    def _child_resource(self, kind: str) -> Resource:
        return self._CHILD_RESOURCES[kind]

    async def get_child(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self._call("get", self._child_resource(kind), namespace, name)
        except NotFound:
            return None

    async def create_child(self, manifest: dict[str, Any]) -> dict[str, Any]:
        meta = manifest["metadata"]
        return await self._call(
            "create", self._child_resource(manifest["kind"]), meta["namespace"], body=manifest
        )

    async def patch_child(
        self, kind: str, namespace: str, name: str, patch: dict[str, Any]
    ) -> dict[str, Any]:
        return await self._call("patch", self._child_resource(kind), namespace, name, body=patch)

    # ------------------------------------------------------------------ reads

    async def list_pods(self, namespace: str, selector: dict[str, str]) -> list[dict[str, Any]]:
        label_selector = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        answer = await self._call("list", PODS, namespace, query={"labelSelector": label_selector})
        # Filtered again here: cheap, and correct even where a selector is not honoured.
        return [
            pod for pod in answer.get("items", []) if labels_match(pod["metadata"].get("labels"), selector)
        ]

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self._call("get", SECRETS, namespace, name)
        except NotFound:
            return None

    async def get_pool(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self._call("get", POOLS, namespace, name)
        except NotFound:
            return None

    # ------------------------------------------------------------------ writes to our own objects

    async def annotate_codebase(self, namespace: str, name: str, annotations: dict[str, str]) -> None:
        """Merge ``annotations`` into a Codebase (a missing Codebase is not an error: nothing to do)."""
        with contextlib.suppress(NotFound):
            await self._call(
                "patch", CODEBASES, namespace, name, body={"metadata": {"annotations": annotations}}
            )
