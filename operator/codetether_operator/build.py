"""Pure builders: a pool's spec -> the manifests of its children. No I/O, no clocks.

Every child carries the same labels, an owner reference to the pool (so deleting the pool deletes
them), and nothing of the pool's own annotations: kopf's and kubectl's bookkeeping stays on the pool.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from codetether_operator.models import API_VERSION, POOL_KIND, PoolSpec

LABEL_PREFIX = "codetether.run/"
POOL_LABEL = f"{LABEL_PREFIX}pool"
COMPONENT_LABEL = f"{LABEL_PREFIX}component"
CONFIG_HASH_ANNOTATION = f"{LABEL_PREFIX}config-hash"
MANAGED_BY = "codetether-operator"

WORKER_CONTAINER = "worker"
CODEBASES_VOLUME = "codebases"
CONFIG_VOLUME = "config"
CONFIG_DIR = "/etc/codetether-worker"
CONFIG_FILE = "config.json"
TMP_VOLUME = "tmp"
HEALTH_PORT_NAME = "health"
# The worker needs a few seconds after the drain to hand back tasks and unregister.
GRACE_MARGIN_SECONDS = 15
WORKER_UID = 10001


def pool_labels(pool_name: str) -> dict[str, str]:
    """Labels on every child of a pool (and on its pods)."""
    return {
        "app.kubernetes.io/name": "codetether-worker",
        "app.kubernetes.io/instance": pool_name,
        "app.kubernetes.io/component": "worker",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        POOL_LABEL: pool_name,
        COMPONENT_LABEL: "worker",
    }


def selector_labels(pool_name: str) -> dict[str, str]:
    """The immutable StatefulSet selector: only what never changes."""
    return {POOL_LABEL: pool_name, COMPONENT_LABEL: "worker"}


def selector_string(pool_name: str) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector_labels(pool_name).items()))


def config_map_name(pool_name: str) -> str:
    return f"{pool_name}-config"


def pod_name(pool_name: str, ordinal: int) -> str:
    return f"{pool_name}-{ordinal}"


def owner_reference(pool: dict[str, Any]) -> dict[str, Any]:
    meta = pool["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": POOL_KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(pool: dict[str, Any], name: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": pool["metadata"]["namespace"],
        "labels": pool_labels(pool["metadata"]["name"]),
        "ownerReferences": [owner_reference(pool)],
    }


def worker_config(spec: PoolSpec) -> dict[str, Any]:
    """The worker's JSON config file (seed keys). Codebases are registered by the operator."""
    config: dict[str, Any] = {
        "server_url": spec.server.url,
        "poll_interval": spec.poll_interval_seconds,
        "capabilities": list(spec.capabilities),
        "max_concurrent_tasks": spec.max_concurrent_tasks,
        "health_port": spec.health_port,
        "drain_timeout": spec.drain_timeout_seconds,
        "codebases": [],
    }
    # Without a Redis URL the worker would try the seed's default (localhost), which is never right in
    # a pod: polling is the delivery then.
    config["redis_url"] = spec.server.redis_url or "none"
    if spec.task_timeout_seconds is not None:
        config["task_timeout"] = spec.task_timeout_seconds
    return config


def config_text(spec: PoolSpec) -> str:
    return json.dumps(worker_config(spec), indent=2, sort_keys=True) + "\n"


def config_hash(spec: PoolSpec) -> str:
    return hashlib.sha256(config_text(spec).encode()).hexdigest()[:16]


def build_config_map(pool: dict[str, Any], spec: PoolSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(pool, config_map_name(pool["metadata"]["name"])),
        "data": {CONFIG_FILE: config_text(spec)},
    }


def build_service(pool: dict[str, Any], spec: PoolSpec) -> dict[str, Any]:
    """Headless Service: stable DNS names <pod>.<pool> for the StatefulSet's pods."""
    name = pool["metadata"]["name"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(pool, name),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": selector_labels(name),
            "ports": [
                {
                    "name": HEALTH_PORT_NAME,
                    "port": spec.health_port,
                    "targetPort": HEALTH_PORT_NAME,
                    "protocol": "TCP",
                }
            ],
        },
    }


def build_pdb(pool: dict[str, Any], spec: PoolSpec) -> dict[str, Any]:
    name = pool["metadata"]["name"]
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(pool, name),
        "spec": {
            "maxUnavailable": spec.max_unavailable,
            "selector": {"matchLabels": selector_labels(name)},
        },
    }


def _env(spec: PoolSpec) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        # The worker id is the pod name: codebase affinity keys on it.
        {"name": "A2A_WORKER_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "A2A_CONFIG", "value": f"{CONFIG_DIR}/{CONFIG_FILE}"},
        {"name": "A2A_SERVER_URL", "value": spec.server.url},
        # The root filesystem is read-only: whatever wants a writable home (git, agents) gets /tmp.
        {"name": "HOME", "value": "/tmp"},
        # Agent sessions live on the codebases volume, so they survive restarts and get synced.
        {"name": "A2A_AGENT_STORAGE", "value": f"{spec.storage.mount_path.rstrip('/')}/.codetether/storage"},
    ]
    if spec.server.redis_url:
        env.append({"name": "A2A_REDIS_URL", "value": spec.server.redis_url})
    if spec.server.auth_secret_ref is not None:
        ref = spec.server.auth_secret_ref
        env.append(
            {"name": "A2A_AUTH_TOKEN", "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}
        )
    for item in spec.env:
        var: dict[str, Any] = {"name": item.name}
        if item.value_from is not None:
            var["valueFrom"] = item.value_from
        else:
            var["value"] = item.value or ""
        env.append(var)
    return env


def _probe(path: str, *, period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": HEALTH_PORT_NAME},
        "periodSeconds": period,
        "timeoutSeconds": 3,
        "failureThreshold": failures,
    }


def _pod_spec(pool: dict[str, Any], spec: PoolSpec) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": WORKER_CONTAINER,
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "env": _env(spec),
        "ports": [{"name": HEALTH_PORT_NAME, "containerPort": spec.health_port, "protocol": "TCP"}],
        "readinessProbe": _probe("/readyz", period=5, failures=3),
        "livenessProbe": _probe("/healthz", period=10, failures=6),
        "startupProbe": _probe("/healthz", period=2, failures=60),
        "volumeMounts": [
            {"name": CODEBASES_VOLUME, "mountPath": spec.storage.mount_path},
            {"name": CONFIG_VOLUME, "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": TMP_VOLUME, "mountPath": "/tmp"},
        ],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    resources = {k: v for k, v in spec.resources.model_dump().items() if v}
    if resources:
        container["resources"] = resources
    pod: dict[str, Any] = {
        "containers": [container],
        "terminationGracePeriodSeconds": spec.drain_timeout_seconds + GRACE_MARGIN_SECONDS,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": WORKER_UID,
            "runAsGroup": WORKER_UID,
            "fsGroup": WORKER_UID,
            "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumes": [
            {"name": CONFIG_VOLUME, "configMap": {"name": config_map_name(pool["metadata"]["name"])}},
            {"name": TMP_VOLUME, "emptyDir": {}},
        ],
    }
    if spec.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": name} for name in spec.image_pull_secrets]
    if spec.node_selector:
        pod["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod["tolerations"] = list(spec.tolerations)
    if spec.affinity:
        pod["affinity"] = dict(spec.affinity)
    if spec.topology_spread_constraints:
        pod["topologySpreadConstraints"] = list(spec.topology_spread_constraints)
    if spec.priority_class_name:
        pod["priorityClassName"] = spec.priority_class_name
    if spec.service_account_name:
        pod["serviceAccountName"] = spec.service_account_name
    return pod


def build_statefulset(pool: dict[str, Any], spec: PoolSpec) -> dict[str, Any]:
    name = pool["metadata"]["name"]
    pod_labels = {**spec.pod_labels, **pool_labels(name)}  # ours win: the selector depends on them
    pod_annotations = {**spec.pod_annotations, CONFIG_HASH_ANNOTATION: config_hash(spec)}
    volume_claim: dict[str, Any] = {
        "metadata": {"name": CODEBASES_VOLUME, "labels": pool_labels(name)},
        "spec": {
            "accessModes": list(spec.storage.access_modes),
            "resources": {"requests": {"storage": spec.storage.size}},
        },
    }
    if spec.storage.storage_class_name:
        volume_claim["spec"]["storageClassName"] = spec.storage.storage_class_name
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _metadata(pool, name),
        "spec": {
            "replicas": spec.replicas,
            "serviceName": name,
            # Workers are independent: start and stop them all at once, not one by one.
            "podManagementPolicy": "Parallel",
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Retain"},
            "selector": {"matchLabels": selector_labels(name)},
            "template": {
                "metadata": {"labels": pod_labels, "annotations": pod_annotations},
                "spec": _pod_spec(pool, spec),
            },
            "volumeClaimTemplates": [volume_claim],
        },
    }


def build_children(pool: dict[str, Any], spec: PoolSpec) -> list[dict[str, Any]]:
    """Every child of a pool, in the order they are applied (config before the pods using it)."""
    return [
        build_config_map(pool, spec),
        build_service(pool, spec),
        build_pdb(pool, spec),
        build_statefulset(pool, spec),
    ]
