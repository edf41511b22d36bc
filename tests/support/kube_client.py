"""The kubernetes client as tests use it: plain dicts in, plain dicts out, for any kubeconfig."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from kubernetes import client, config

from codetether_operator.models import CODEBASE_PLURAL, GROUP, POOL_PLURAL, VERSION

T = TypeVar("T")
CRDS = Path(__file__).resolve().parents[2] / "crds"


class KubeTestClient:
    def __init__(self, kubeconfig: Path) -> None:
        configuration = client.Configuration()
        config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
        self.api = client.ApiClient(configuration)
        self.core = client.CoreV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.extensions = client.ApiextensionsV1Api(self.api)

    def close(self) -> None:
        self.api.close()

    def _raw(self, method: str, path: str, body: Any = None, content_type: str | None = None) -> Any:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        request = self.api.param_serialize(
            method=method, resource_path=path, header_params=headers, body=body, auth_settings=["BearerToken"]
        )
        response = self.api.call_api(*request)
        response.read()
        if response.status == 404:
            return None
        if response.status >= 400:
            raise RuntimeError(f"{method} {path}: {response.status} {response.data[:500]!r}")
        import json

        return json.loads(response.data) if response.data else None

    # ------------------------------------------------------------------ setup

    def install_crds(self) -> None:
        for path in sorted(CRDS.glob("*.yaml")):
            for crd in yaml.safe_load_all(path.read_text()):
                if (
                    crd
                    and self._raw(
                        "GET",
                        f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd['metadata']['name']}",
                    )
                    is None
                ):
                    self.extensions.create_custom_resource_definition(crd)

    def create_namespace(self, name: str) -> None:
        self.core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})

    # ------------------------------------------------------------------ objects

    def create_pool(self, namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "CodetetherWorkerPool",
            "metadata": {"name": name},
            "spec": spec,
        }
        return self._raw("POST", f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{POOL_PLURAL}", body)  # type: ignore[no-any-return]

    def create_codebase(self, namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Codebase",
            "metadata": {"name": name},
            "spec": spec,
        }
        return self._raw("POST", f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{CODEBASE_PLURAL}", body)  # type: ignore[no-any-return]

    def get_pool(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._raw("GET", f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{POOL_PLURAL}/{name}")  # type: ignore[no-any-return]

    def get_codebase(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._raw("GET", f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{CODEBASE_PLURAL}/{name}")  # type: ignore[no-any-return]

    def patch_pool(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self._raw(
            "PATCH",
            f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{POOL_PLURAL}/{name}",
            patch,
            "application/merge-patch+json",
        )

    def delete_codebase(self, namespace: str, name: str) -> None:
        self._raw("DELETE", f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{CODEBASE_PLURAL}/{name}")

    def get(self, path: str) -> Any:
        return self._raw("GET", path)

    def create_secret(self, namespace: str, name: str, data: dict[str, str]) -> None:
        encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        self.core.create_namespaced_secret(namespace, {"metadata": {"name": name}, "data": encoded})

    def create_ready_pod(self, namespace: str, pool: str, ordinal: int) -> None:
        """What the StatefulSet controller (absent from the emulator) would create, already ready."""
        from codetether_operator.build import pool_labels

        self.core.create_namespaced_pod(
            namespace,
            {
                "metadata": {"name": f"{pool}-{ordinal}", "labels": pool_labels(pool)},
                "spec": {"containers": [{"name": "worker", "image": "worker:test"}]},
                "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
            },
        )

    def events(self, namespace: str) -> list[dict[str, Any]]:
        answer = self._raw("GET", f"/api/v1/namespaces/{namespace}/events")
        return list((answer or {}).get("items", []))


async def eventually(
    probe: Callable[[], T | Awaitable[T]], *, within: float = 30.0, interval: float = 0.2, what: str = ""
) -> T:
    """Poll ``probe`` until it returns something truthy; fail with the last value after ``within`` seconds."""
    deadline = time.monotonic() + within
    last: Any = None
    while True:
        value = probe()
        if asyncio.iscoroutine(value) or isinstance(value, Awaitable):
            value = await value
        last = value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached after {within}s: {what or probe!r}; last: {last!r}")
        await asyncio.sleep(interval)
