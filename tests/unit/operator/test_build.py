"""Pure builders: a pool's spec -> its children."""

from __future__ import annotations

import json
from typing import Any

from codetether_operator import build
from codetether_operator.models import parse_pool_spec

POOL: dict[str, Any] = {
    "metadata": {
        "name": "alpha",
        "namespace": "team",
        "uid": "u-1",
        "annotations": {
            "kopf.zalando.org/last": "x",
            "kubectl.kubernetes.io/last-applied-configuration": "{}",
        },
    }
}


def _spec(**extra: Any):
    return parse_pool_spec({"image": "w:1", "server": {"url": "http://s:8000"}, **extra})


def test_statefulset_shape() -> None:
    spec = _spec(
        replicas=3,
        drainTimeoutSeconds=120,
        server={"url": "http://s:8000", "redisUrl": "redis://r:6379/0", "authSecretRef": {"name": "tok"}},
        storage={"size": "5Gi", "storageClassName": "fast"},
    )
    sts = build.build_statefulset(POOL, spec)
    assert sts["spec"]["replicas"] == 3
    assert sts["spec"]["selector"]["matchLabels"] == {
        "codetether.run/pool": "alpha",
        "codetether.run/component": "worker",
    }
    pod = sts["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 120 + build.GRACE_MARGIN_SECONDS
    container = pod["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["A2A_WORKER_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["A2A_SERVER_URL"]["value"] == "http://s:8000"
    assert env["A2A_REDIS_URL"]["value"] == "redis://r:6379/0"
    assert env["A2A_AUTH_TOKEN"]["valueFrom"] == {"secretKeyRef": {"name": "tok", "key": "token"}}
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    claim = sts["spec"]["volumeClaimTemplates"][0]
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
    assert claim["spec"]["storageClassName"] == "fast"
    assert {"name": "codebases", "mountPath": "/codebases"} in container["volumeMounts"]


def test_children_are_owned_labelled_and_carry_no_tool_annotations() -> None:
    for child in build.build_children(POOL, _spec()):
        meta = child["metadata"]
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "codetether.run/v1alpha1",
                "kind": "CodetetherWorkerPool",
                "name": "alpha",
                "uid": "u-1",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        assert meta["labels"]["codetether.run/pool"] == "alpha"
        assert "annotations" not in meta
        assert meta["namespace"] == "team"


def test_config_map_and_rollout_hash() -> None:
    spec = _spec(capabilities=["agent", "gpu"], pollIntervalSeconds=2, maxConcurrentTasks=4)
    config = json.loads(build.build_config_map(POOL, spec)["data"]["config.json"])
    assert config["server_url"] == "http://s:8000"
    assert config["capabilities"] == ["agent", "gpu"]
    assert config["poll_interval"] == 2 and config["max_concurrent_tasks"] == 4
    first = build.build_statefulset(POOL, spec)["spec"]["template"]["metadata"]["annotations"]
    second = build.build_statefulset(POOL, _spec(capabilities=["agent"]))["spec"]["template"]["metadata"][
        "annotations"
    ]
    assert first[build.CONFIG_HASH_ANNOTATION] != second[build.CONFIG_HASH_ANNOTATION]


def test_service_is_headless_and_pdb_selects_the_pods() -> None:
    service = build.build_service(POOL, _spec())
    assert service["spec"]["clusterIP"] == "None"
    pdb = build.build_pdb(POOL, _spec(maxUnavailable=2))
    assert pdb["spec"] == {"maxUnavailable": 2, "selector": {"matchLabels": build.selector_labels("alpha")}}


def test_user_pod_labels_cannot_override_selector_labels() -> None:
    sts = build.build_statefulset(POOL, _spec(podLabels={"codetether.run/pool": "evil", "team": "a"}))
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert labels["codetether.run/pool"] == "alpha" and labels["team"] == "a"


def test_worker_config_turns_redis_off_when_the_pool_names_none() -> None:
    assert build.worker_config(_spec())["redis_url"] == "none"
    with_redis = _spec(server={"url": "http://s:8000", "redisUrl": "redis://r:6379/0"})
    assert build.worker_config(with_redis)["redis_url"] == "redis://r:6379/0"


def test_agent_storage_is_on_the_codebases_volume() -> None:
    sts = build.build_statefulset(POOL, _spec(storage={"mountPath": "/work/"}))
    env = {e["name"]: e for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["A2A_AGENT_STORAGE"]["value"] == "/work/.codetether/storage"
