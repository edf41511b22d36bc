"""End-to-end scenarios against a real cluster with the operator installed (see conftest.py).

Each test makes its own pool (unique names), so tests are independent and reruns never collide.
"""

from __future__ import annotations

from typing import Any

import pytest
from conftest import CODEBASES, POOLS, Cluster

from codetether_contract.client import CodetetherClient, NotFoundError
from codetether_contract.models import Task, TaskCreate, TaskStatus

POOL_KIND, CODEBASE_KIND = "CodetetherWorkerPool", "Codebase"


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for item in ((obj or {}).get("status") or {}).get("conditions") or []:
        if item.get("type") == type_:
            return dict(item)
    return None


async def pool_ready(cluster: Cluster, name: str, replicas: int) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        pool = cluster.get(POOLS, name)
        status = (pool or {}).get("status") or {}
        ready = condition(pool, "Ready")
        if (
            ready
            and ready["status"] == "True"
            and status.get("readyReplicas") == replicas
            and status.get("registeredWorkers") == replicas
            and status.get("observedGeneration") == pool["metadata"]["generation"]
        ):
            return pool
        return None

    return await cluster.wait_for(f"pool {name} ready with {replicas} registered workers", probe)


async def codebase_registered(cluster: Cluster, name: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        codebase = cluster.get(CODEBASES, name)
        status = (codebase or {}).get("status") or {}
        if (
            status.get("phase") == "Registered"
            and status.get("observedGeneration") == codebase["metadata"]["generation"]
        ):
            return codebase
        return None

    return await cluster.wait_for(f"codebase {name} registered", probe)


async def finished(cluster: Cluster, server: CodetetherClient, task_id: str) -> Task:
    async def final() -> Task | None:
        task = await server.get_task(task_id)
        return task if task.status.is_final else None

    task: Task = await cluster.wait_for(f"task {task_id} to finish", final)
    return task


async def make_pool(
    cluster: Cluster, cleanup: list[tuple[str, str]], name: str, replicas: int, **extra: Any
) -> None:
    cluster.create(POOLS, POOL_KIND, name, cluster.pool_spec(replicas, **extra))
    cleanup.append((POOLS, name))


async def make_codebase(
    cluster: Cluster, cleanup: list[tuple[str, str]], name: str, spec: dict[str, Any]
) -> None:
    cluster.create(CODEBASES, CODEBASE_KIND, name, spec)
    cleanup.append((CODEBASES, name))


async def test_pool_of_three_routes_pinned_and_global_tasks(
    cluster: Cluster, server: CodetetherClient, cleanup: list[tuple[str, str]], unique: str
) -> None:
    pool = f"route-{unique}"
    await make_pool(cluster, cleanup, pool, 3)
    await make_codebase(cluster, cleanup, f"api-{unique}", {"pool": pool, "placement": {"ordinal": 1}})
    await make_codebase(cluster, cleanup, f"web-{unique}", {"pool": pool, "placement": {"pod": f"{pool}-2"}})
    await make_codebase(cluster, cleanup, f"shared-{unique}", {"pool": pool, "global": True})
    ready = await pool_ready(cluster, pool, 3)
    assert ready["status"]["selector"]
    api = await codebase_registered(cluster, f"api-{unique}")
    web = await codebase_registered(cluster, f"web-{unique}")
    shared = await codebase_registered(cluster, f"shared-{unique}")
    assert api["status"]["worker"] == f"{pool}-1"
    assert web["status"]["worker"] == f"{pool}-2"
    assert sorted(shared["status"]["workers"]) == [f"{pool}-{i}" for i in range(3)]

    # The server sees the registrations under the pod names.
    registered = await server.get_codebase(api["status"]["codebaseId"])
    assert registered.worker_id == f"{pool}-1"
    workers = {w.id for w in await server.list_workers()}
    assert {f"{pool}-{i}" for i in range(3)} <= workers

    pinned = [
        await server.create_task(
            TaskCreate(title="api", prompt="@echo api", codebase_id=api["status"]["codebaseId"])
        ),
        await server.create_task(
            TaskCreate(title="web", prompt="@echo web", codebase_id=web["status"]["codebaseId"])
        ),
    ]
    global_tasks = [
        await server.create_task(TaskCreate(title=f"global {i}", prompt=f"@echo g{i}", codebase_id="global"))
        for i in range(4)
    ]
    done = [await finished(cluster, server, t.id) for t in pinned + global_tasks]
    assert all(t.status is TaskStatus.COMPLETED for t in done), done
    assert done[0].worker_id == f"{pool}-1" and "api" in (done[0].result or "")
    assert done[1].worker_id == f"{pool}-2" and "web" in (done[1].result or "")
    pool_pods = {f"{pool}-{i}" for i in range(3)}
    assert {t.worker_id for t in done[2:]} <= pool_pods


async def test_scale_by_replicas_and_by_kubectl_scale(
    cluster: Cluster, server: CodetetherClient, cleanup: list[tuple[str, str]], unique: str
) -> None:
    pool = f"scale-{unique}"
    await make_pool(cluster, cleanup, pool, 2)
    await pool_ready(cluster, pool, 2)

    cluster.patch(POOLS, pool, {"spec": {"replicas": 4}})
    await pool_ready(cluster, pool, 4)
    statefulset = cluster.apps.read_namespaced_stateful_set(pool, cluster.namespace)
    assert statefulset.spec.replicas == 4

    # The /scale subresource: what kubectl scale, HPA and KEDA use.
    cluster.run_kubectl("-n", cluster.namespace, "scale", f"{POOLS}.codetether.run/{pool}", "--replicas=1")
    scaled = await pool_ready(cluster, pool, 1)
    assert scaled["spec"]["replicas"] == 1

    def pods_gone() -> bool:
        pods = cluster.core.list_namespaced_pod(
            cluster.namespace, label_selector=scaled["status"]["selector"]
        )
        return [p.metadata.name for p in pods.items] == [f"{pool}-0"]

    await cluster.wait_for("pods beyond ordinal 0 to stop", pods_gone)
    scale = cluster.custom.get_namespaced_custom_object_scale(
        "codetether.run", "v1alpha1", cluster.namespace, POOLS, pool
    )
    assert scale["spec"]["replicas"] == 1 and scale["status"]["replicas"] == 1


async def test_codebase_deletion_deregisters_it(
    cluster: Cluster, server: CodetetherClient, cleanup: list[tuple[str, str]], unique: str
) -> None:
    pool = f"delcb-{unique}"
    await make_pool(cluster, cleanup, pool, 1)
    await make_codebase(cluster, cleanup, f"doomed-{unique}", {"pool": pool})
    codebase = await codebase_registered(cluster, f"doomed-{unique}")
    codebase_id = codebase["status"]["codebaseId"]
    assert (await server.get_codebase(codebase_id)).worker_id == f"{pool}-0"

    cluster.delete(CODEBASES, f"doomed-{unique}")
    await cluster.wait_for(
        "the Codebase object to go", lambda: cluster.get(CODEBASES, f"doomed-{unique}") is None
    )
    try:
        await server.get_codebase(codebase_id)
    except NotFoundError:
        pass
    else:
        raise AssertionError(f"codebase {codebase_id} is still registered on the server")


async def test_pool_deletion_cleans_up(
    cluster: Cluster, server: CodetetherClient, cleanup: list[tuple[str, str]], unique: str
) -> None:
    pool = f"delpool-{unique}"
    await make_pool(cluster, cleanup, pool, 2)
    ready = await pool_ready(cluster, pool, 2)
    selector = ready["status"]["selector"]
    assert cluster.core.list_namespaced_persistent_volume_claim(
        cluster.namespace, label_selector=selector
    ).items

    cluster.delete(POOLS, pool)

    def nothing_left() -> bool:
        ns = cluster.namespace
        return (
            cluster.get(POOLS, pool) is None
            and not cluster.apps.list_namespaced_stateful_set(ns, label_selector=selector).items
            and not cluster.core.list_namespaced_service(ns, label_selector=selector).items
            and not cluster.core.list_namespaced_config_map(ns, label_selector=selector).items
            and not cluster.core.list_namespaced_pod(ns, label_selector=selector).items
            and not cluster.core.list_namespaced_persistent_volume_claim(ns, label_selector=selector).items
        )

    await cluster.wait_for(f"everything of pool {pool} to be deleted", nothing_left)

    async def unregistered() -> bool:
        live = {w.id for w in await server.list_workers() if w.status.value != "offline"}
        return not live & {f"{pool}-0", f"{pool}-1"}

    await cluster.wait_for("the pool's workers to leave the server", unregistered)


async def test_operator_failover_keeps_reconciling(
    cluster: Cluster, server: CodetetherClient, cleanup: list[tuple[str, str]], unique: str
) -> None:
    deployment = cluster.apps.read_namespaced_deployment("codetether-operator", cluster.operator_namespace)
    if deployment.spec.replicas < 2:
        pytest.skip("the operator runs one replica: nothing to fail over to")
    pool = f"ha-{unique}"
    await make_pool(cluster, cleanup, pool, 1)
    await pool_ready(cluster, pool, 1)

    peering = cluster.custom.get_cluster_custom_object(
        "kopf.dev", "v1", "clusterkopfpeerings", "codetether-operator"
    )
    records = (peering.get("status") or {}).items()
    active = max(records, key=lambda item: item[1].get("priority", 0))[0]
    cluster.core.delete_namespaced_pod(active, cluster.operator_namespace)

    def record_gone() -> bool:
        current = cluster.custom.get_cluster_custom_object(
            "kopf.dev", "v1", "clusterkopfpeerings", "codetether-operator"
        )
        return active not in (current.get("status") or {})

    await cluster.wait_for(f"the stopped operator {active} to leave the peering", record_gone)
    cluster.patch(POOLS, pool, {"spec": {"replicas": 2}})
    await pool_ready(cluster, pool, 2)
