"""The plain install labels its namespace `pod-security.kubernetes.io/enforce: restricted`, and the
chart says its pods meet that profile: the operator pod and the worker pods the operator builds for
a pool from the chart must pass the restricted Pod Security Standard, or the API server rejects them."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from codetether_operator import build
from codetether_operator.models import parse_pool_spec
from scripts.install_manifests import ROOT, install_objects, render_chart
from tests.unit.install.chart_values import EVERYTHING_ON, VALUE_SETS
from tests.unit.install.schemas import crd_schemas, validate_object

# Pod Security Standards, "restricted" (v1.27+): volume types a restricted pod may use.
RESTRICTED_VOLUME_TYPES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
BASELINE_CAPABILITIES_ADD = {"NET_BIND_SERVICE"}


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """The restricted profile's controls, each violation named; empty when the pod passes."""
    problems = []
    pod_security = pod.get("securityContext") or {}
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(flag):
            problems.append(f"{flag} is set")
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            problems.append(f"volume {volume['name']} uses {sorted(kinds - RESTRICTED_VOLUME_TYPES)}")
    pod_seccomp = (pod_security.get("seccompProfile") or {}).get("type")
    for container in pod.get("initContainers", []) + pod.get("containers", []):
        name = container["name"]
        security = container.get("securityContext") or {}
        if security.get("privileged"):
            problems.append(f"{name}: privileged")
        if security.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation must be false")
        capabilities = security.get("capabilities") or {}
        if "ALL" not in capabilities.get("drop", []):
            problems.append(f"{name}: capabilities must drop ALL")
        if set(capabilities.get("add", [])) - BASELINE_CAPABILITIES_ADD:
            problems.append(f"{name}: adds capabilities {capabilities['add']}")
        non_root = security.get("runAsNonRoot", pod_security.get("runAsNonRoot"))
        if non_root is not True:
            problems.append(f"{name}: runAsNonRoot must be true")
        if security.get("runAsUser", pod_security.get("runAsUser")) == 0:
            problems.append(f"{name}: runAsUser 0")
        seccomp = (security.get("seccompProfile") or {}).get("type", pod_seccomp)
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccompProfile must be RuntimeDefault or Localhost")
        for port in container.get("ports", []):
            if port.get("hostPort"):
                problems.append(f"{name}: hostPort {port['hostPort']}")
    return problems


def test_the_check_catches_an_unsafe_pod() -> None:
    unsafe = {
        "hostNetwork": True,
        "volumes": [{"name": "root", "hostPath": {"path": "/"}}],
        "containers": [{"name": "c", "securityContext": {"privileged": True, "runAsUser": 0}}],
    }
    found = " ".join(restricted_violations(unsafe))
    for expected in (
        "hostNetwork",
        "hostPath",
        "privileged",
        "allowPrivilegeEscalation",
        "drop ALL",
        "runAsNonRoot",
        "seccomp",
    ):
        assert expected in found


def test_plain_install_namespace_enforces_restricted_and_its_pods_comply() -> None:
    objects = install_objects()
    [namespace] = [o for o in objects if o["kind"] == "Namespace"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for obj in objects:
        if obj["kind"] == "Deployment":
            assert restricted_violations(obj["spec"]["template"]["spec"]) == []


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_operator_pod_is_restricted(name: str) -> None:
    [deployment] = [o for o in render_chart(VALUE_SETS[name]) if o["kind"] == "Deployment"]
    assert restricted_violations(deployment["spec"]["template"]["spec"]) == []


def test_worker_pods_built_for_the_chart_pool_are_restricted() -> None:
    [pool] = [o for o in render_chart(EVERYTHING_ON) if o["kind"] == "CodetetherWorkerPool"]
    pool["metadata"]["uid"] = "00000000-0000-0000-0000-000000000002"
    [statefulset] = [
        c for c in build.build_children(pool, parse_pool_spec(pool["spec"])) if c["kind"] == "StatefulSet"
    ]
    assert restricted_violations(statefulset["spec"]["template"]["spec"]) == []


def test_e2e_manifests_are_valid_and_restricted() -> None:
    objects = [
        doc
        for path in sorted((ROOT / "e2e" / "kind" / "manifests").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]
    crds = crd_schemas()
    for obj in objects:
        validate_object(obj, crds)
    [namespace] = [o for o in objects if o["kind"] == "Namespace"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    deployments = [o for o in objects if o["kind"] == "Deployment"]
    assert {d["metadata"]["name"] for d in deployments} == {"redis", "codetether-server"}
    for deployment in deployments:
        assert deployment["metadata"]["namespace"] == namespace["metadata"]["name"]
        assert restricted_violations(deployment["spec"]["template"]["spec"]) == []
