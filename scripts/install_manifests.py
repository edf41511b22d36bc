#!/usr/bin/env python3
"""Render the Helm chart into the plain `kubectl apply -f` manifest (deploy/manifests/install.yaml).

Helm's own engine renders the chart (helm-python-sdk binds Helm's Go SDK; no helm binary needed).
The plain manifest is: a Namespace, the CRDs (the chart's crds/ folder), then the rendered templates
in Helm's install order, relabelled as not managed by Helm. `--check` writes nothing and exits 1
when the committed file is stale. The tests import the rendering helpers from here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "codetether-worker"
INSTALL_MANIFEST = ROOT / "deploy" / "manifests" / "install.yaml"
INSTALL_NAMESPACE = "codetether-system"
INSTALL_RELEASE = "codetether"
# The plain install runs one operator replica, so no peering object: kopf's peering resource
# (a CR) cannot be applied in the same `kubectl apply` that creates its CRD.
INSTALL_VALUES: dict[str, Any] = {"peering": {"enabled": False}}

# Helm's install order (pkg/release/util/kind_sorter.go), trimmed to the kinds that matter here.
INSTALL_ORDER = [
    "PriorityClass",
    "Namespace",
    "NetworkPolicy",
    "ResourceQuota",
    "LimitRange",
    "PodSecurityPolicy",
    "PodDisruptionBudget",
    "ServiceAccount",
    "Secret",
    "SecretList",
    "ConfigMap",
    "StorageClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleList",
    "ClusterRoleBinding",
    "ClusterRoleBindingList",
    "Role",
    "RoleList",
    "RoleBinding",
    "RoleBindingList",
    "Service",
    "DaemonSet",
    "Pod",
    "ReplicationController",
    "ReplicaSet",
    "Deployment",
    "HorizontalPodAutoscaler",
    "StatefulSet",
    "Job",
    "CronJob",
    "IngressClass",
    "Ingress",
    "APIService",
]


def _install_rank(obj: dict[str, Any]) -> int:
    kind = obj.get("kind", "")
    return INSTALL_ORDER.index(kind) if kind in INSTALL_ORDER else len(INSTALL_ORDER)


def render_chart(
    values: dict[str, Any] | None = None,
    *,
    release: str = INSTALL_RELEASE,
    namespace: str = INSTALL_NAMESPACE,
    chart_dir: Path = CHART,
) -> list[dict[str, Any]]:
    """Every object the chart's templates render for these values, in Helm's install order.

    The values are checked against values.schema.json first, as `helm install` does.
    """
    with helm.Chart.load(str(chart_dir)) as chart:
        chart.validate_schema(values or {})
        rendered = chart.render(values or {}, name=release, namespace=namespace, is_install=True)
    objects: list[dict[str, Any]] = []
    for template in sorted(rendered):
        if template.endswith("NOTES.txt"):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(rendered[template]) if doc)
    return sorted(objects, key=_install_rank)  # stable: template order within one kind


def render_notes(values: dict[str, Any] | None = None, *, release: str = INSTALL_RELEASE) -> str:
    with helm.Chart.load(str(CHART)) as chart:
        rendered = chart.render(values or {}, name=release, namespace=INSTALL_NAMESPACE)
    return next(text for name, text in rendered.items() if name.endswith("NOTES.txt"))


def chart_crds(chart_dir: Path = CHART) -> list[dict[str, Any]]:
    """The CustomResourceDefinitions in the chart's crds/ folder, in file order."""
    documents: list[dict[str, Any]] = []
    for path in sorted((chart_dir / "crds").glob("*.yaml")):
        documents.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return documents


def _not_managed_by_helm(obj: dict[str, Any]) -> dict[str, Any]:
    labels = obj.get("metadata", {}).get("labels")
    if isinstance(labels, dict):
        labels.pop("helm.sh/chart", None)
        if labels.get("app.kubernetes.io/managed-by") == "Helm":
            labels["app.kubernetes.io/managed-by"] = "kubectl"
    template_labels = obj.get("spec", {}).get("template", {}).get("metadata", {}).get("labels")
    if isinstance(template_labels, dict):
        template_labels.pop("helm.sh/chart", None)
        if template_labels.get("app.kubernetes.io/managed-by") == "Helm":
            template_labels["app.kubernetes.io/managed-by"] = "kubectl"
    return obj


def install_namespace() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": INSTALL_NAMESPACE,
            "labels": {
                "app.kubernetes.io/part-of": "codetether",
                # The operator's and the workers' pods meet the "restricted" Pod Security Standard.
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest",
            },
        },
    }


def install_objects() -> list[dict[str, Any]]:
    """Namespace, CRDs, then the operator: everything `kubectl apply -f install.yaml` creates."""
    operator = [_not_managed_by_helm(obj) for obj in render_chart(INSTALL_VALUES)]
    return [install_namespace(), *chart_crds(), *operator]


def install_manifest() -> str:
    with helm.Chart.load(str(CHART)) as chart:
        version, app_version = chart.version, chart.metadata.get("appVersion", "")
    header = (
        "# codetether-operator: CRDs and operator, for `kubectl apply --server-side -f install.yaml`.\n"
        f"# Generated by scripts/install_manifests.py from charts/codetether-worker {version}"
        f" (appVersion {app_version}). Do not edit; change the chart and re-run the script.\n"
    )
    body = "".join(
        "---\n" + yaml.safe_dump(obj, sort_keys=False, default_flow_style=False, width=110)
        for obj in install_objects()
    )
    return header + body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when stale")
    parser.add_argument("--output", type=Path, default=INSTALL_MANIFEST)
    args = parser.parse_args(argv)
    wanted = install_manifest()
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != wanted:
            print(f"{args.output} is stale: run python scripts/install_manifests.py", file=sys.stderr)
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
