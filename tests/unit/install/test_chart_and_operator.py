"""The chart and the operator agree: the pool the chart creates becomes valid Kubernetes objects
through the operator's own builders, and the chart's PodMonitor and worker NetworkPolicy select
exactly the pods those builders label."""

from __future__ import annotations

from typing import Any

import pytest

from codetether_operator import build
from codetether_operator.models import parse_pool_spec
from scripts.install_manifests import render_chart
from tests.unit.install.chart_values import EVERYTHING_ON
from tests.unit.install.schemas import crd_schemas, validate_object


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Kubernetes LabelSelector semantics (matchLabels + matchExpressions)."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        present = key in labels
        if (
            (operator == "Exists" and not present)
            or (operator == "DoesNotExist" and present)
            or (operator == "In" and labels.get(key) not in values)
            or (operator == "NotIn" and present and labels[key] in values)
        ):
            return False
    return True


@pytest.fixture(scope="module")
def everything() -> list[dict[str, Any]]:
    return render_chart(EVERYTHING_ON)


def pool_children(pool: dict[str, Any]) -> list[dict[str, Any]]:
    pool = {**pool, "metadata": {**pool["metadata"], "uid": "00000000-0000-0000-0000-000000000001"}}
    return build.build_children(pool, parse_pool_spec(pool["spec"]))


def test_the_chart_pool_builds_into_valid_objects(everything: list[dict[str, Any]]) -> None:
    [pool] = [o for o in everything if o["kind"] == "CodetetherWorkerPool"]
    children = pool_children(pool)
    assert {c["kind"] for c in children} >= {"StatefulSet", "Service", "ConfigMap", "PodDisruptionBudget"}
    crds = crd_schemas()
    for child in children:
        validate_object(child, crds)
    [statefulset] = [c for c in children if c["kind"] == "StatefulSet"]
    pod = statefulset["spec"]["template"]["spec"]
    accounts = {o["metadata"]["name"] for o in everything if o["kind"] == "ServiceAccount"}
    assert pod["serviceAccountName"] in accounts
    assert pod["automountServiceAccountToken"] is False


def test_podmonitor_and_worker_policy_select_the_worker_pods(everything: list[dict[str, Any]]) -> None:
    [pool] = [o for o in everything if o["kind"] == "CodetetherWorkerPool"]
    [statefulset] = [c for c in pool_children(pool) if c["kind"] == "StatefulSet"]
    template = statefulset["spec"]["template"]
    port_names = {p["name"] for c in template["spec"]["containers"] for p in c.get("ports", [])}

    [monitor] = [o for o in everything if o["kind"] == "PodMonitor"]
    assert matches(monitor["spec"]["selector"], template["metadata"]["labels"])
    assert {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]} <= port_names

    [policy] = [
        o for o in everything if o["kind"] == "NetworkPolicy" and o["metadata"]["name"].endswith("-workers")
    ]
    assert matches(policy["spec"]["podSelector"], template["metadata"]["labels"])
    assert {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]} <= port_names


def test_worker_selectors_leave_the_operator_alone(everything: list[dict[str, Any]]) -> None:
    [deployment] = [o for o in everything if o["kind"] == "Deployment"]
    [monitor] = [o for o in everything if o["kind"] == "PodMonitor"]
    assert not matches(monitor["spec"]["selector"], deployment["spec"]["template"]["metadata"]["labels"])
