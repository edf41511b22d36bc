"""The chart grants exactly the Kubernetes API calls the operator's code declares, in both modes.

The expected permissions come from codetether_operator.kube (API_CALLS: the operator's own calls,
checked against its code by the operator's tests; KOPF_API_CALLS: what kopf does for it), never from
a copy in this file. Only Kubernetes facts live here: which resources are cluster-scoped, and which
of kopf's calls a mode never makes.
"""

from __future__ import annotations

from typing import Any

import pytest

from codetether_operator import kube, settings
from scripts.install_manifests import chart_crds, render_chart

Triple = tuple[str, str, str]  # (api group, resource, verb)

# Cluster-scoped resources outside our CRDs (Kubernetes facts, not operator facts).
BUILTIN_CLUSTER_SCOPED = {("", "namespaces"), ("apiextensions.k8s.io", "customresourcedefinitions")}


def cluster_scoped() -> set[tuple[str, str]]:
    from_crds = {
        (crd["spec"]["group"], crd["spec"]["names"]["plural"])
        for crd in chart_crds()
        if crd["spec"]["scope"] == "Cluster"
    }
    return BUILTIN_CLUSTER_SCOPED | from_crds


def declared_calls() -> set[Triple]:
    return {
        (group, resource, verb)
        for group, resource, verbs in (*kube.API_CALLS, *kube.KOPF_API_CALLS)
        for verb in verbs
    }


def expected(*, cluster_wide: bool, peering: bool) -> tuple[set[Triple], set[Triple]]:
    """(calls a Role/ClusterRole must allow, calls deliberately not granted) for one mode."""
    scoped = cluster_scoped()
    needed, not_granted = set(), set()
    for group, resource, verb in declared_calls():
        base = resource.split("/")[0]
        if group == "kopf.dev":
            # kopf uses the cluster peering when it watches the whole cluster, else the namespaced one.
            wanted_peering = "clusterkopfpeerings" if cluster_wide else "kopfpeerings"
            if not peering or base != wanted_peering:
                continue
        if (group, base) == ("", "namespaces") and cluster_wide:
            continue  # kopf lists namespaces only to resolve namespace patterns (namespaced mode)
        if (group, base) in scoped and not cluster_wide:
            not_granted.add((group, resource, verb))  # a Role cannot grant it; kopf falls back on 403
            continue
        needed.add((group, resource, verb))
    return needed, not_granted


def granted(rules: list[dict[str, Any]]) -> set[Triple]:
    triples = set()
    for rule in rules:
        assert "resourceNames" not in rule and "nonResourceURLs" not in rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    assert "*" not in (group, resource, verb), f"wildcard in {rule}"
                    triples.add((group, resource, verb))
    return triples


def test_the_operator_declares_its_calls() -> None:
    calls = declared_calls()
    assert ("apps", "statefulsets", "create") in calls
    assert ("codetether.run", "codetetherworkerpools", "watch") in calls
    assert {verb for _, _, verb in calls} <= {"get", "list", "watch", "create", "patch", "update", "delete"}


@pytest.mark.parametrize("peering", [True, False])
def test_cluster_mode_grants_exactly_the_declared_calls(peering: bool) -> None:
    objects = render_chart({"peering": {"enabled": peering}})
    [role] = [o for o in objects if o["kind"] == "ClusterRole"]
    needed, _ = expected(cluster_wide=True, peering=peering)
    assert granted(role["rules"]) == needed


@pytest.mark.parametrize("peering", [True, False])
def test_namespace_mode_grants_exactly_the_declared_namespaced_calls(peering: bool) -> None:
    values = {
        "operator": {"scope": "namespaces", "watchNamespaces": ["a", "b"]},
        "peering": {"enabled": peering},
    }
    objects = render_chart(values)
    roles = [o for o in objects if o["kind"] == "Role"]
    assert len(roles) == 2
    needed, not_granted = expected(cluster_wide=False, peering=peering)
    for role in roles:
        assert granted(role["rules"]) == needed
    # What a Role cannot grant is only discovery that kopf degrades gracefully without.
    assert {(g, r) for g, r, _ in not_granted} <= {
        ("apiextensions.k8s.io", "customresourcedefinitions"),
        ("", "namespaces"),
    }


def operator_settings(deployment: dict[str, Any]) -> settings.OperatorSettings:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    environ = {var["name"]: var["value"] for var in container.get("env", []) if "value" in var}
    return settings.load(container.get("args", []), environ)


@pytest.mark.parametrize(
    "values",
    [
        {},
        {"replicaCount": 2},
        {"peering": {"enabled": False}},
        {"operator": {"scope": "namespaces", "watchNamespaces": ["a", "b"], "logLevel": "debug"}},
        {"operator": {"healthPort": 9000, "metricsPort": 9001}},
    ],
)
def test_the_operator_reads_the_settings_the_chart_gives_it(values: dict[str, Any]) -> None:
    objects = render_chart(values)
    [deployment] = [o for o in objects if o["kind"] == "Deployment"]
    loaded = operator_settings(deployment)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert loaded.liveness_port == ports["health"]
    assert loaded.metrics_port == ports["metrics"]
    cluster_roles = [o for o in objects if o["kind"] == "ClusterRole"]
    roles = {o["metadata"]["namespace"] for o in objects if o["kind"] == "Role"}
    if loaded.cluster_wide:
        assert cluster_roles and not roles
    else:
        assert set(loaded.namespaces) == roles and not cluster_roles
    peerings = [o for o in objects if o["kind"] in ("KopfPeering", "ClusterKopfPeering")]
    if loaded.standalone:
        assert peerings == []
    else:
        assert {p["metadata"]["name"] for p in peerings} == {loaded.peering}
        assert {p["kind"] for p in peerings} == {
            "ClusterKopfPeering" if loaded.cluster_wide else "KopfPeering"
        }
    assert loaded.log_level == values.get("operator", {}).get("logLevel", "info").upper()


def test_every_variable_the_chart_sets_is_one_the_operator_reads() -> None:
    known = {settings.env_name(option.attr) for option in settings._OPTIONS}
    values = {"operator": {"scope": "namespaces"}, "peering": {"enabled": False}}
    for objects in (render_chart(), render_chart(values)):
        [deployment] = [o for o in objects if o["kind"] == "Deployment"]
        names = {var["name"] for var in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        ours = {name for name in names if name.startswith(settings.ENV_PREFIX)}
        assert ours and ours <= known
