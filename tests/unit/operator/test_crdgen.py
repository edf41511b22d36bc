"""The committed CRDs are exactly what the models generate, and they are structural."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from codetether_operator import crdgen

CRDS = Path(__file__).resolve().parents[3] / "crds"


def test_committed_crds_match_the_models() -> None:
    for name, text in crdgen.generate().items():
        path = CRDS / name
        assert path.exists(), f"{path} missing: run `make crds`"
        assert path.read_text() == text, f"{path} is stale: run `make crds`"


def test_check_mode_reports_stale_files(tmp_path: Path) -> None:
    assert crdgen.main(["--output", str(tmp_path), "--check"]) == 1
    assert crdgen.main(["--output", str(tmp_path)]) == 0
    assert crdgen.main(["--output", str(tmp_path), "--check"]) == 0
    (tmp_path / "codetether.run_codebases.yaml").write_text("# edited\n")
    assert crdgen.main(["--output", str(tmp_path), "--check"]) == 1


def _walk(node: Any, path: str = "$") -> list[str]:
    """Violations of the structural-schema rules the API server enforces."""
    problems: list[str] = []
    if not isinstance(node, dict):
        return problems
    for forbidden in ("$ref", "title", "$defs", "const"):
        if forbidden in node:
            problems.append(f"{path}: {forbidden}")
    if "anyOf" in node and not node.get("x-kubernetes-int-or-string"):
        problems.append(f"{path}: anyOf")
    if "default" in node and node["default"] is None:
        problems.append(f"{path}: null default")
    if "type" not in node and not node.get("x-kubernetes-int-or-string"):
        problems.append(f"{path}: no type")
    if (
        path != "$.metadata"
        and node.get("type") == "object"
        and not (
            "properties" in node
            or "additionalProperties" in node
            or node.get("x-kubernetes-preserve-unknown-fields")
        )
    ):
        problems.append(f"{path}: object without properties")
    for name, sub in node.get("properties", {}).items():
        problems += _walk(sub, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            problems += _walk(node[key], f"{path}[{key}]")
    return problems


def test_schemas_are_structural() -> None:
    for crd in (crdgen.pool_crd(), crdgen.codebase_crd()):
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        assert _walk(schema) == []


def test_pool_crd_scale_subresource_and_columns() -> None:
    version = crdgen.pool_crd()["spec"]["versions"][0]
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    assert [c["name"] for c in version["additionalPrinterColumns"]] == [
        "Desired",
        "Ready",
        "Registered",
        "Busy",
        "Phase",
        "Age",
    ]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["properties"]["replicas"]["minimum"] == 0
    assert spec["properties"]["server"]["properties"]["url"]["pattern"].startswith("^https?://")
    assert spec["properties"]["imagePullPolicy"]["enum"] == ["Always", "IfNotPresent", "Never"]
    assert spec["properties"]["storage"]["default"] == {}
    assert spec["properties"]["storage"]["properties"]["size"]["default"] == "10Gi"


def test_names_and_categories() -> None:
    pool = crdgen.pool_crd()["spec"]["names"]
    codebase = crdgen.codebase_crd()["spec"]["names"]
    assert pool["shortNames"] == ["ctwp"] and codebase["shortNames"] == ["ctcb"]
    assert pool["categories"] == codebase["categories"] == ["codetether"]
    columns = [c["name"] for c in crdgen.codebase_crd()["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert columns == ["Pool", "Worker", "Phase", "Age"]


def test_generated_yaml_parses_to_the_same_objects() -> None:
    docs = list(yaml.safe_load_all(crdgen.generate()["codetether.run_codetetherworkerpools.yaml"]))
    assert docs == [crdgen.pool_crd()]
