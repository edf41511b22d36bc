"""The installed operator itself: peered replicas, one active, RBAC-limited account, locked down."""

from __future__ import annotations

from conftest import Cluster


def test_operator_replicas_share_one_peering(cluster: Cluster) -> None:
    deployment = cluster.apps.read_namespaced_deployment("codetether-operator", cluster.operator_namespace)
    assert deployment.status.ready_replicas == deployment.spec.replicas
    if deployment.spec.replicas < 2:
        return
    peering = cluster.custom.get_cluster_custom_object(
        "kopf.dev", "v1", "clusterkopfpeerings", "codetether-operator"
    )
    pods = cluster.core.list_namespaced_pod(
        cluster.operator_namespace, label_selector="app.kubernetes.io/component=operator"
    )
    names = {p.metadata.name for p in pods.items if p.status.phase == "Running"}
    assert names <= set((peering.get("status") or {}).keys())


def test_worker_pods_cannot_use_the_api(cluster: Cluster) -> None:
    account = cluster.core.read_namespaced_service_account(cluster.worker_service_account, cluster.namespace)
    assert account.automount_service_account_token is False
    review = cluster.run_kubectl(
        "auth",
        "can-i",
        "list",
        "pods",
        "-n",
        cluster.namespace,
        f"--as=system:serviceaccount:{cluster.namespace}:{cluster.worker_service_account}",
    )
    assert review.strip() == "no"
