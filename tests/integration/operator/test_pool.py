"""CodetetherWorkerPool against a Kubernetes API and the real server."""

from __future__ import annotations

from typing import Any

from codetether_contract import CodetetherClient
from codetether_contract.models import WorkerRegistration
from tests.integration.operator.conftest import KubeEnv, pool_spec
from tests.support.kube_client import eventually
from tests.support.server import ServerProcess


def _condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any]:
    for item in ((obj or {}).get("status") or {}).get("conditions", []):
        if item["type"] == type_:
            return dict(item)
    return {}


async def test_pool_creates_owned_children_and_reports_workers(
    kube_env: KubeEnv, server: ServerProcess, operator: None
) -> None:
    ns, kube = kube_env.namespace, kube_env.client
    created = kube.create_pool(ns, "alpha", pool_spec(server.url, replicas=3))

    sts = await eventually(
        lambda: kube.get(f"/apis/apps/v1/namespaces/{ns}/statefulsets/alpha"), what="StatefulSet"
    )
    assert sts["spec"]["replicas"] == 3
    assert sts["metadata"]["ownerReferences"][0]["uid"] == created["metadata"]["uid"]
    assert not any(k.startswith(("kopf", "kubectl")) for k in (sts["metadata"].get("annotations") or {}))
    env = {e["name"]: e for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["A2A_WORKER_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    for path in (
        f"/api/v1/namespaces/{ns}/services/alpha",
        f"/api/v1/namespaces/{ns}/configmaps/alpha-config",
        f"/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets/alpha",
    ):
        child = await eventually(lambda path=path: kube.get(path), what=path)
        assert child["metadata"]["ownerReferences"][0]["name"] == "alpha"

    if kube_env.emulated:
        for ordinal in range(3):
            kube.create_ready_pod(ns, "alpha", ordinal)
    async with CodetetherClient(server.url) as api:
        for ordinal in range(3):
            await api.register_worker(
                WorkerRegistration(worker_id=f"alpha-{ordinal}", name=f"alpha-{ordinal}")
            )

    pool = await eventually(
        lambda: (p := kube.get_pool(ns, "alpha")) and _condition(p, "Ready").get("status") == "True" and p,
        what="pool Ready",
    )
    status = pool["status"]
    assert status["readyReplicas"] == 3 and status["registeredWorkers"] == 3
    assert status["idleWorkers"] == 3 and status["busyWorkers"] == 0
    assert status["selector"] == "codetether.run/component=worker,codetether.run/pool=alpha"
    assert status["phase"] == "Ready"
    assert status["observedGeneration"] == pool["metadata"]["generation"]


async def test_scaling_patches_the_statefulset_and_says_so(
    kube_env: KubeEnv, server: ServerProcess, operator: None
) -> None:
    ns, kube = kube_env.namespace, kube_env.client
    kube.create_pool(ns, "beta", pool_spec(server.url, replicas=1))
    await eventually(lambda: kube.get(f"/apis/apps/v1/namespaces/{ns}/statefulsets/beta"), what="StatefulSet")
    kube.patch_pool(ns, "beta", {"spec": {"replicas": 4}})
    await eventually(
        lambda: (
            (kube.get(f"/apis/apps/v1/namespaces/{ns}/statefulsets/beta") or {})
            .get("spec", {})
            .get("replicas")
            == 4
        ),
        what="replicas 4",
    )
    await eventually(
        lambda: any(
            e.get("reason") == "Scaled" and "1 to 4" in e.get("message", "") for e in kube.events(ns)
        ),
        what="Scaled event",
    )


async def test_missing_secret_degrades_and_creates_nothing(
    kube_env: KubeEnv, server: ServerProcess, operator: None
) -> None:
    ns, kube = kube_env.namespace, kube_env.client
    kube.create_pool(
        ns, "gamma", pool_spec(server.url, server={"url": server.url, "authSecretRef": {"name": "nope"}})
    )
    pool = await eventually(
        lambda: (p := kube.get_pool(ns, "gamma")) and _condition(p, "Degraded").get("status") == "True" and p,
        what="Degraded",
    )
    degraded = _condition(pool, "Degraded")
    assert degraded["reason"] == "SecretNotFound"
    assert "'nope'" in degraded["message"] and "authSecretRef" in degraded["message"]
    assert kube.get(f"/apis/apps/v1/namespaces/{ns}/statefulsets/gamma") is None
    assert kube.get(f"/api/v1/namespaces/{ns}/configmaps/gamma-config") is None
    await eventually(
        lambda: any(
            e.get("reason") == "SecretNotFound" and e.get("type") == "Warning" for e in kube.events(ns)
        ),
        what="Warning event",
    )
    # Fixing it (the Secret appears) lets the pool converge.
    kube.create_secret(ns, "nope", {"token": "t"})
    await eventually(
        lambda: kube.get(f"/apis/apps/v1/namespaces/{ns}/statefulsets/gamma"), what="StatefulSet"
    )


async def test_invalid_url_degrades_with_the_field_named(
    kube_env: KubeEnv, server: ServerProcess, operator: None
) -> None:
    ns, kube = kube_env.namespace, kube_env.client
    if not kube_env.emulated:
        return  # a real API server refuses the object itself (the CRD's pattern)
    kube.create_pool(ns, "delta", pool_spec("ftp://nowhere"))
    pool = await eventually(
        lambda: (p := kube.get_pool(ns, "delta")) and _condition(p, "Degraded").get("status") == "True" and p,
        what="Degraded",
    )
    degraded = _condition(pool, "Degraded")
    assert degraded["reason"] == "InvalidSpec"
    assert "spec.server.url" in degraded["message"]
    assert kube.get(f"/apis/apps/v1/namespaces/{ns}/statefulsets/delta") is None


async def test_server_unreachable_then_back(kube_env: KubeEnv, server: ServerProcess, operator: None) -> None:
    ns, kube = kube_env.namespace, kube_env.client
    kube.create_pool(ns, "eps", pool_spec(server.url, replicas=1))
    await eventually(lambda: kube.get(f"/apis/apps/v1/namespaces/{ns}/statefulsets/eps"), what="StatefulSet")
    server.kill()
    pool = await eventually(
        lambda: (
            (p := kube.get_pool(ns, "eps"))
            and _condition(p, "Degraded").get("reason") == "ServerUnreachable"
            and p
        ),
        what="ServerUnreachable",
    )
    assert server.url in _condition(pool, "Degraded")["message"]
    await eventually(
        lambda: any(e.get("reason") == "ServerUnreachable" for e in kube.events(ns)), what="Warning event"
    )
    server.start()
    await eventually(
        lambda: _condition(kube.get_pool(ns, "eps"), "Degraded").get("status") == "False", what="recovered"
    )
