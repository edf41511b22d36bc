"""Two operator replicas configured exactly as the Helm chart configures them (settings read from the
rendered Deployment's environment, each RBAC mode with its peering object, the chart's first pool
and codebases), against a Kubernetes API (the project's kmock-based emulator) and the real server: one
reconciles, and when it stops cleanly the other takes over."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from codetether_contract import CodetetherClient
from codetether_contract.models import WorkerRegistration
from codetether_operator import settings as operator_settings
from codetether_operator.__main__ import run
from codetether_operator.kube import Kube
from scripts.install_manifests import chart_crds, install_objects, render_chart
from tests.support.kube_client import KubeTestClient, eventually
from tests.support.kube_emulator import KubeEmulatorThread
from tests.support.server import ServerProcess

# Only what makes the test quick; everything else comes from the chart.
TEST_OVERRIDES = {
    "CODETETHER_OPERATOR_LIVENESS_PORT": "0",
    "CODETETHER_OPERATOR_METRICS_PORT": "0",
    "CODETETHER_OPERATOR_POOL_RESYNC": "0.5",
    "CODETETHER_OPERATOR_CODEBASE_RESYNC": "1",
}
PEERING_LOGGER = "kopf._core.engines.peering"
CUSTOM_KINDS = {"KopfPeering", "ClusterKopfPeering", "CodetetherWorkerPool", "Codebase"}


@pytest.fixture
def kube(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[KubeTestClient, Path]]:
    emulator = KubeEmulatorThread().start()
    kubeconfig = emulator.kubeconfig(tmp_path / "kubeconfig")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    client = KubeTestClient(kubeconfig)
    try:
        for crd in chart_crds():  # the chart's crds/, as `helm install` applies them first
            client.extensions.create_custom_resource_definition(crd)
        yield client, kubeconfig
    finally:
        client.close()
        emulator.stop()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(env={"A2A_STORAGE": "memory", "A2A_AUTH_TOKENS": ""}, log_dir=tmp_path)
    process.start()
    try:
        yield process
    finally:
        process.stop()


def chart_settings(deployment: dict[str, Any], priority: int) -> operator_settings.OperatorSettings:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    environ = {var["name"]: var["value"] for var in container["env"] if "value" in var}
    # A fixed priority per replica makes "which one is active" known in advance.
    environ |= TEST_OVERRIDES | {"CODETETHER_OPERATOR_PRIORITY": str(priority)}
    return operator_settings.load(container.get("args", []), environ)


@contextlib.asynccontextmanager
async def replica(
    settings: operator_settings.OperatorSettings, kubeconfig: Path
) -> AsyncIterator[asyncio.Event]:
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(
        run(settings, stop_flag=stop, ready_flag=ready, kube=Kube.from_environment(str(kubeconfig)))
    )
    try:
        await asyncio.wait_for(ready.wait(), 30)
        yield stop
    finally:
        stop.set()
        with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(task, 20)


def create(kube: KubeTestClient, obj: dict[str, Any]) -> None:
    group, version = obj["apiVersion"].split("/")
    plural = {
        "KopfPeering": "kopfpeerings",
        "ClusterKopfPeering": "clusterkopfpeerings",
        "CodetetherWorkerPool": "codetetherworkerpools",
        "Codebase": "codebases",
    }[obj["kind"]]
    if obj["kind"] == "ClusterKopfPeering":
        kube.custom.create_cluster_custom_object(group, version, plural, obj)
    else:
        kube.custom.create_namespaced_custom_object(group, version, obj["metadata"]["namespace"], plural, obj)


def peering_log(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == PEERING_LOGGER and text in r.getMessage()]


@pytest.mark.parametrize("scope", ["namespaces", "cluster"])
async def test_two_chart_configured_replicas_reconcile_and_fail_over(
    kube: tuple[KubeTestClient, Path], server: ServerProcess, caplog: pytest.LogCaptureFixture, scope: str
) -> None:
    caplog.set_level(logging.INFO, logger=PEERING_LOGGER)
    client, kubeconfig = kube
    ns = f"ct-{uuid.uuid4().hex[:8]}"
    client.create_namespace(ns)
    values = {
        "replicaCount": 2,
        "operator": {"scope": scope, "watchNamespaces": [ns] if scope == "namespaces" else []},
        "pool": {"create": True, "name": "fleet", "spec": {"replicas": 2, "server": {"url": server.url}}},
        "codebases": [
            {"name": "api", "spec": {"placement": {"ordinal": 1}}},
            {"name": "shared", "spec": {"global": True}},
        ],
    }
    objects = render_chart(values, namespace=ns)
    [deployment] = [o for o in objects if o["kind"] == "Deployment"]
    for obj in objects:
        if obj["kind"] in CUSTOM_KINDS:
            create(client, obj)

    first, second = chart_settings(deployment, 200), chart_settings(deployment, 100)
    assert first.namespaces == ([ns] if scope == "namespaces" else [])
    assert not first.standalone and first.peering == "codetether-operator"

    async with replica(first, kubeconfig) as stop_first, replica(second, kubeconfig):
        sts_path = f"/apis/apps/v1/namespaces/{ns}/statefulsets/fleet"
        sts = await eventually(lambda: client.get(sts_path), what="the pool's StatefulSet")
        assert sts["spec"]["replicas"] == 2
        peering_path = (
            f"/apis/kopf.dev/v1/namespaces/{ns}/kopfpeerings/codetether-operator"
            if scope == "namespaces"
            else "/apis/kopf.dev/v1/clusterkopfpeerings/codetether-operator"
        )
        peering = await eventually(
            lambda: (
                len((client.get(peering_path) or {}).get("status") or {}) == 2 and client.get(peering_path)
            ),
            what="both replicas in the chart's KopfPeering",
        )
        assert sorted(entry["priority"] for entry in peering["status"].values()) == [100, 200]
        # kopf's own word: the standby paused in favour of the priority-200 replica.
        await eventually(
            lambda: peering_log(caplog, "Pausing operations in favour of"), what="the standby to pause"
        )
        assert all("priority=200" in line for line in peering_log(caplog, "Pausing operations in favour of"))

        # What the StatefulSet controller and the worker processes would do in a cluster.
        for ordinal in range(2):
            client.create_ready_pod(ns, "fleet", ordinal)
        async with CodetetherClient(server.url) as api:
            for ordinal in range(2):
                await api.register_worker(
                    WorkerRegistration(worker_id=f"fleet-{ordinal}", name=f"fleet-{ordinal}")
                )
            api_codebase = await eventually(
                lambda: (
                    ((client.get_codebase(ns, "api") or {}).get("status") or {}).get("phase") == "Registered"
                    and client.get_codebase(ns, "api")
                ),
                what="codebase api registered",
            )
            assert api_codebase["status"]["worker"] == "fleet-1"
            assert (await api.get_codebase(api_codebase["status"]["codebaseId"])).worker_id == "fleet-1"
            shared = await eventually(
                lambda: (
                    ((client.get_codebase(ns, "shared") or {}).get("status") or {}).get("phase")
                    == "Registered"
                    and client.get_codebase(ns, "shared")
                ),
                what="codebase shared registered",
            )
            assert sorted(shared["status"]["workers"]) == ["fleet-0", "fleet-1"]
        await eventually(
            lambda: ((client.get_pool(ns, "fleet") or {}).get("status") or {}).get("phase") == "Ready",
            what="pool Ready",
        )

        # The active replica (priority 200) stops cleanly; the standby must take over.
        stop_first.set()
        await eventually(
            lambda: len((client.get(peering_path) or {}).get("status") or {}) == 1,
            what="the stopped replica to leave the peering",
        )
        await eventually(lambda: peering_log(caplog, "Resuming operations"), what="the standby to resume")
        client.patch_pool(ns, "fleet", {"spec": {"replicas": 3}})
        await eventually(
            lambda: ((client.get(sts_path) or {}).get("spec") or {}).get("replicas") == 3,
            what="the standby replica to scale the StatefulSet",
        )


async def test_plain_manifest_operator_reconciles_a_pool(
    kube: tuple[KubeTestClient, Path], server: ServerProcess
) -> None:
    """deploy/manifests/install.yaml: its operator settings (one replica, no peering object) run a pool."""
    client, kubeconfig = kube
    objects = install_objects()
    [namespace] = [o for o in objects if o["kind"] == "Namespace"]
    ns = namespace["metadata"]["name"]
    client.create_namespace(ns)
    [deployment] = [o for o in objects if o["kind"] == "Deployment"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    environ = {var["name"]: var["value"] for var in container["env"] if "value" in var} | TEST_OVERRIDES
    settings = operator_settings.load(container.get("args", []), environ)
    assert settings.standalone and settings.cluster_wide
    [worker_account] = [
        o for o in objects if o["kind"] == "ServiceAccount" and o.get("automountServiceAccountToken") is False
    ]
    async with replica(settings, kubeconfig):
        client.create_pool(
            ns,
            "plain",
            {
                "replicas": 1,
                "image": "codetether-worker:test",
                "serviceAccountName": worker_account["metadata"]["name"],
                "server": {"url": server.url},
            },
        )
        sts = await eventually(
            lambda: client.get(f"/apis/apps/v1/namespaces/{ns}/statefulsets/plain"),
            what="the pool's StatefulSet",
        )
        assert sts["spec"]["template"]["spec"]["serviceAccountName"] == "codetether-worker"
