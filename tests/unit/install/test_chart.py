"""The Helm chart rendered and linted by Helm's own engine, every object schema-validated."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import pytest
import yaml

from scripts.install_manifests import CHART, ROOT, render_chart, render_notes
from tests.unit.install.chart_values import EVERYTHING_ON, VALUE_SETS
from tests.unit.install.schemas import crd_schemas, validate_object

WARNING = 2  # helm lint severities: 1 info, 2 warning, 3 error


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: render_chart(values) for name, values in VALUE_SETS.items()}


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_helm_lint_is_clean(name: str) -> None:
    report = helm.lint(str(CHART), VALUE_SETS[name], strict=True, namespace="codetether-system")
    problems = [m for m in report["messages"] if m["severity"] >= WARNING]
    assert report["errors"] == [] and problems == [], report


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_every_rendered_object_is_valid(name: str, rendered: dict[str, list[dict[str, Any]]]) -> None:
    crds = crd_schemas()
    objects = rendered[name]
    assert objects, "nothing rendered"
    for obj in objects:
        try:
            validate_object(obj, crds)
        except Exception as exc:
            raise AssertionError(f"{obj['kind']}/{obj['metadata']['name']}: {exc}") from exc


def test_validation_catches_a_broken_object() -> None:
    deployment = one(render_chart(), "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = 3
    with pytest.raises(jsonschema.ValidationError, match=r"3 is not of type 'string'"):
        validate_object(deployment, crd_schemas())
    pool = one(render_chart({"pool": {"create": True}}), "CodetetherWorkerPool")
    pool["spec"]["replicas"] = -1
    with pytest.raises(jsonschema.ValidationError, match=r"-1 is less than the minimum"):
        validate_object(pool, crd_schemas())


def test_app_version_is_the_python_distribution_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"]


def test_image_tag_defaults_to_app_version_and_digest_wins() -> None:
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    image = one(render_chart(), "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.endswith(f":{app_version}")
    tagged = one(render_chart({"image": {"tag": "9.9.9"}}), "Deployment")
    assert tagged["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":9.9.9")
    pinned = one(render_chart({"image": {"tag": "9.9.9", "digest": "sha256:" + "b" * 64}}), "Deployment")
    assert pinned["spec"]["template"]["spec"]["containers"][0]["image"].endswith("@sha256:" + "b" * 64)
    pool = one(render_chart({"pool": {"create": True}}), "CodetetherWorkerPool")
    assert pool["spec"]["image"].endswith(f":{app_version}")


def test_operator_pod_is_locked_down_by_default() -> None:
    pod = one(render_chart(), "Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_one_replica_is_replaced_never_doubled() -> None:
    objects = render_chart()
    assert one(objects, "Deployment")["spec"]["strategy"] == {"type": "Recreate"}
    assert by_kind(objects, "PodDisruptionBudget") == []


def test_ha_runs_peered_replicas_spread_over_nodes(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["ha"]
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    anti = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    term = anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    assert term["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    peering = one(objects, "ClusterKopfPeering")
    assert peering["metadata"]["name"] == default_values()["peering"]["name"]
    assert one(objects, "PodDisruptionBudget")["spec"]["minAvailable"] == 1


def test_several_replicas_without_peering_are_refused() -> None:
    with pytest.raises(helm.HelmError, match=r"replicaCount > 1 needs peering.enabled=true"):
        render_chart({"replicaCount": 2, "peering": {"enabled": False}})


def test_cluster_mode_binds_one_cluster_role(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["defaults"]
    role, binding = one(objects, "ClusterRole"), one(objects, "ClusterRoleBinding")
    account = one(render_chart(), "Deployment")["spec"]["template"]["spec"]["serviceAccountName"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account, "namespace": "codetether-system"}
    ]
    assert by_kind(objects, "Role") == []


def test_namespace_mode_uses_roles_only(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["several-namespaces"]
    assert by_kind(objects, "ClusterRole") == [] and by_kind(objects, "ClusterRoleBinding") == []
    assert all("namespace" in obj["metadata"] for obj in objects if obj["kind"] != "CustomResourceDefinition")
    roles = {obj["metadata"]["namespace"] for obj in by_kind(objects, "Role")}
    bindings = {obj["metadata"]["namespace"] for obj in by_kind(objects, "RoleBinding")}
    peerings = {obj["metadata"]["namespace"] for obj in by_kind(objects, "KopfPeering")}
    worker_accounts = {obj["metadata"]["namespace"] for obj in by_kind(objects, "ServiceAccount")} - {
        "codetether-system"
    }
    assert roles == bindings == peerings == worker_accounts == {"team-a", "team-b"}
    for binding in by_kind(objects, "RoleBinding"):
        assert binding["subjects"][0]["namespace"] == "codetether-system"
    default_ns = render_chart({"operator": {"scope": "namespaces"}})
    assert {obj["metadata"]["namespace"] for obj in by_kind(default_ns, "Role")} == {"codetether-system"}


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_worker_account_has_no_api_access(name: str, rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered[name]
    workers = [
        obj
        for obj in by_kind(objects, "ServiceAccount")
        if obj["metadata"]["labels"]["app.kubernetes.io/component"] == "worker"
    ]
    if VALUE_SETS[name].get("workerServiceAccount", {}).get("create", True):
        assert workers
    for account in workers:
        assert account["automountServiceAccountToken"] is False
    bound = {
        (subject.get("namespace"), subject["name"])
        for binding in by_kind(objects, "RoleBinding") + by_kind(objects, "ClusterRoleBinding")
        for subject in binding["subjects"]
    }
    for account in workers:
        assert (account["metadata"]["namespace"], account["metadata"]["name"]) not in bound
    for pool in by_kind(objects, "CodetetherWorkerPool"):
        assert pool["spec"]["serviceAccountName"] in {a["metadata"]["name"] for a in workers}


def test_first_pool_and_codebases_from_values(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["everything-on"]
    pool = one(objects, "CodetetherWorkerPool")
    assert pool["metadata"]["name"] == "workers"
    assert pool["spec"]["replicas"] == 3
    assert pool["spec"]["server"]["authSecretRef"] == {"name": "codetether-token"}
    codebases = {obj["metadata"]["name"]: obj["spec"] for obj in by_kind(objects, "Codebase")}
    assert codebases == {
        "api": {"pool": "workers", "description": "the API", "placement": {"ordinal": 0}},
        "shared": {"pool": "workers", "global": True},
    }
    assert by_kind(render_chart(), "CodetetherWorkerPool") == []


def test_monitors_select_what_exists(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["everything-on"]
    service = one(objects, "Service")
    monitor = one(objects, "ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["spec"]["selector"].items()
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    pod_monitor = one(objects, "PodMonitor")
    assert pod_monitor["spec"]["namespaceSelector"]["matchNames"] == ["default", "team-a"]
    with pytest.raises(helm.HelmError, match=r"needs metrics\.service\.enabled"):
        render_chart({"metrics": {"service": {"enabled": False}, "serviceMonitor": {"enabled": True}}})


def test_network_policies(rendered: dict[str, list[dict[str, Any]]]) -> None:
    assert by_kind(rendered["defaults"], "NetworkPolicy") == []
    policies = {p["metadata"]["name"]: p for p in by_kind(rendered["everything-on"], "NetworkPolicy")}
    operator = policies["codetether-operator"]
    deployment = one(rendered["everything-on"], "Deployment")
    assert operator["spec"]["podSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    egress_ports = {port["port"] for rule in operator["spec"]["egress"] for port in rule.get("ports", [])}
    assert {53, 443, 6443, 8000, 6379} <= egress_ports
    assert operator["spec"]["ingress"][0]["from"] == EVERYTHING_ON["networkPolicy"]["metricsFrom"]
    namespaced = by_kind(rendered["several-namespaces"], "NetworkPolicy")
    assert {p["metadata"]["namespace"] for p in namespaced if p["metadata"]["name"].endswith("-workers")} == {
        "team-a",
        "team-b",
    }


def test_notes_say_how_to_check_the_install() -> None:
    notes = render_notes({"operator": {"scope": "namespaces", "watchNamespaces": ["a", "b"]}})
    assert "rollout status deployment/codetether-operator" in notes
    assert "a, b" in notes


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"replicaCount": 0}, "/replicaCount"),
        ({"operator": {"scope": "everywhere"}}, "/operator/scope"),
        ({"imagee": {}}, "imagee"),
        ({"pool": {"name": "Not_A_Name"}}, "/pool/name"),
        ({"image": {"digest": "latest"}}, "/image/digest"),
        ({"codebases": [{"spec": {}}]}, "name"),
    ],
)
def test_bad_values_are_refused_naming_the_field(values: dict[str, Any], field: str) -> None:
    with helm.Chart.load(str(CHART)) as chart, pytest.raises(helm.HelmValuesError, match=field):
        chart.validate_schema(values)


def default_values() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return loaded


# Values holding one Kubernetes object (a SecurityContext, ResourceRequirements, a pool spec): one
# value each, typed by Kubernetes itself.
KUBERNETES_OBJECT_VALUES = {"podSecurityContext", "securityContext", "resources", "pool.spec"}


def leaf_paths(values: dict[str, Any], prefix: str = "") -> set[str]:
    """Dotted paths of every value; a map or list default that users fill in counts as a leaf."""
    paths = set()
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and path not in KUBERNETES_OBJECT_VALUES:
            paths |= leaf_paths(value, f"{path}.")
        else:
            paths.add(path)
    return paths


def schema_paths(schema: dict[str, Any], prefix: str = "") -> set[str]:
    paths = set()
    for key, sub in schema.get("properties", {}).items():
        path = f"{prefix}{key}"
        if sub.get("type") == "object" and "properties" in sub and path not in KUBERNETES_OBJECT_VALUES:
            paths |= schema_paths(sub, f"{path}.")
        else:
            paths.add(path)
    return paths


def test_schema_covers_every_value_and_nothing_else() -> None:
    with helm.Chart.load(str(CHART)) as chart:
        schema = chart.schema
    assert schema is not None
    values = leaf_paths(default_values())
    assert values == schema_paths(schema) - {"global"}
    assert schema["additionalProperties"] is False


def test_readme_documents_every_value() -> None:
    readme = (CHART / "README.md").read_text()
    table = readme.split("<!-- values:start -->")[1].split("<!-- values:end -->")[0]
    documented = {line.split("`")[1] for line in table.splitlines() if line.startswith("| `")}
    assert (
        subprocess.run([sys.executable, "scripts/chart_values_doc.py", "--check"], cwd=ROOT).returncode == 0
    )
    assert leaf_paths(default_values()) <= documented
    assert documented <= leaf_paths(default_values()) | {"global"}


def test_chart_files_are_in_the_package() -> None:
    with helm.Chart.load(str(CHART)) as chart:
        names = {f["name"] for f in chart.files}
        crd_files = {Path(c["filename"]).name for c in chart.crds}
    assert "README.md" in names
    assert crd_files == {p.name for p in (ROOT / "crds").glob("*.yaml")}


def test_the_e2e_install_values_render_valid_objects() -> None:
    spec = importlib.util.spec_from_file_location("install_chart", ROOT / "e2e" / "kind" / "install_chart.py")
    assert spec is not None and spec.loader is not None
    install_chart = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(install_chart)
    values = install_chart.e2e_values("codetether-operator:e2e", "IfNotPresent", "codetether-e2e", 2)
    objects = render_chart(values)
    crds = crd_schemas()
    for obj in objects:
        validate_object(obj, crds)
    [deployment] = by_kind(objects, "Deployment")
    assert deployment["metadata"]["name"] == "codetether-operator"
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "codetether-operator:e2e"
    accounts = {
        (a["metadata"]["namespace"], a["metadata"]["name"]) for a in by_kind(objects, "ServiceAccount")
    }
    assert ("codetether-e2e", "codetether-worker") in accounts


def test_the_packaged_chart_renders_the_same(tmp_path: Path) -> None:
    archive = helm.package(str(CHART), destination=str(tmp_path))
    assert Path(archive).name == f"codetether-worker-{chart_yaml()['version']}.tgz"
    with helm.Chart.load(archive) as packaged, helm.Chart.load(str(CHART)) as source:
        values = EVERYTHING_ON
        assert packaged.render(values, name="r", namespace="n") == source.render(
            values, name="r", namespace="n"
        )
        assert {c["filename"] for c in packaged.crds} == {c["filename"] for c in source.crds}
        assert packaged.schema == source.schema


def chart_yaml() -> dict[str, Any]:
    chart: dict[str, Any] = yaml.safe_load((CHART / "Chart.yaml").read_text())
    return chart


def test_the_value_sets_are_all_there(tmp_path: Path) -> None:
    expected = {
        "defaults",
        "ha",
        "single-namespace",
        "several-namespaces",
        "everything-on",
        "bring-your-own-accounts",
    }
    assert expected <= set(VALUE_SETS)
    with helm.Chart.load(helm.package(str(CHART), destination=str(tmp_path))) as packaged:
        assert not any(f["name"].startswith("ci/") for f in packaged.files)  # .helmignore keeps them out
