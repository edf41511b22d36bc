"""Validate rendered objects: Kubernetes kinds against the Kubernetes OpenAPI schemas
(kubernetes-validate), CRD-typed objects against the CRD's own openAPIV3Schema."""

from __future__ import annotations

from typing import Any

import jsonschema
import kubernetes_validate

from scripts.install_manifests import chart_crds

# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest the validator knows.
KUBE_VERSIONS = ("1.27.0", kubernetes_validate.utils.latest_version())

# prometheus-operator kinds: no schema ships with kubernetes-validate and the prometheus-operator
# CRDs are not ours to vendor; only their metadata is checked (against ObjectMeta).
KINDS_WITHOUT_SCHEMA = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
}


def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> openAPIV3Schema of every CRD in the chart."""
    schemas = {}
    for crd in chart_crds():
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schemas[(f"{group}/{version['name']}", kind)] = version["schema"]["openAPIV3Schema"]
    return schemas


def validate_object(obj: dict[str, Any], crds: dict[tuple[str, str], dict[str, Any]]) -> None:
    """Raise when ``obj`` is not valid; never pass silently over an object it cannot check."""
    key = (obj["apiVersion"], obj["kind"])
    if key in crds:
        jsonschema.Draft7Validator(crds[key]).validate(obj)
        return
    if key in KINDS_WITHOUT_SCHEMA:
        meta_only = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj["metadata"]}
        kubernetes_validate.validate(meta_only, KUBE_VERSIONS[-1], strict=True)
        assert isinstance(obj.get("spec"), dict), f"{obj['kind']} has no spec"
        return
    for version in KUBE_VERSIONS:
        kubernetes_validate.validate(obj, version, strict=True)
