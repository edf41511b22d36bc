"""Generate ``crds/*.yaml`` from the pydantic models (``python -m codetether_operator.crdgen``).

The API server wants a *structural* OpenAPI v3 schema: every field typed, no ``$ref``, no ``null``
defaults, ``anyOf`` only in the shapes Kubernetes allows. pydantic's JSON schema is turned into
one here; ``--check`` exits 1 when the committed files differ from what the models generate.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, NoDefault
from pydantic_core import PydanticUndefined, core_schema

from codetether_operator import models

DEFAULT_OUTPUT = Path(__file__).resolve().parents[2] / "crds"

# Checks the models make after field validation, repeated in the API server as CEL rules so that
# kubectl refuses the object before the operator ever sees it.
POOL_NAME_RULES = [
    {
        "rule": f"size(self.metadata.name) <= {models.MAX_POOL_NAME}",
        "message": f"metadata.name must be at most {models.MAX_POOL_NAME} characters so pod names stay valid",
    },
    {
        "rule": f"self.metadata.name.matches('{models.POOL_NAME_PATTERN}')",
        "message": "metadata.name must be a DNS-1035 label (it names the headless Service)",
    },
]
PLACEMENT_RULES = [
    {
        "rule": "!(has(self.ordinal) && has(self.pod))",
        "message": "set placement.ordinal or placement.pod, not both",
    }
]
CODEBASE_SPEC_RULES = [
    {
        "rule": "!(has(self.global) && self.global && has(self.placement) && "
        "(has(self.placement.ordinal) || has(self.placement.pod)))",
        "message": "global: true cannot be combined with placement",
    }
]


class _WithFactoryDefaults(GenerateJsonSchema):
    """Also emit defaults that come from ``default_factory`` (lists, nested objects)."""

    def get_default_value(self, schema: core_schema.WithDefaultSchema) -> Any:
        factory = schema.get("default_factory")
        if factory is not None and not schema.get("default_factory_takes_data"):
            value = factory()  # type: ignore[call-arg]
            return value.model_dump(by_alias=True, mode="json") if isinstance(value, BaseModel) else value
        default = schema.get("default", NoDefault)
        return NoDefault if default is PydanticUndefined else default


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            target = copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]])
            rest = {k: v for k, v in node.items() if k != "$ref"}
            return _inline({**target, **rest}, defs)
        return {k: _inline(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


def _structural(node: Any) -> Any:
    """Rewrite one pydantic JSON schema node into Kubernetes' structural dialect."""
    if isinstance(node, list):
        return [_structural(v) for v in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "anyOf" in node:
        branches = [b for b in node.pop("anyOf") if b.get("type") != "null"]
        if node.get("x-kubernetes-int-or-string"):
            branches = []
        elif len(branches) == 1:
            node = {**branches[0], **node}
        elif branches:
            raise ValueError(f"cannot express anyOf {branches!r} structurally")
    node.pop("title", None)
    if node.get("default", 0) is None:
        del node["default"]
    if isinstance(node.get("default"), dict) and node.get("type") == "object" and "properties" in node:
        node["default"] = {}  # nested defaults fill in from the properties' own defaults
    if "exclusiveMinimum" in node and not isinstance(node["exclusiveMinimum"], bool):
        node["minimum"] = node["exclusiveMinimum"]
        node["exclusiveMinimum"] = True
    if node.get("x-kubernetes-preserve-unknown-fields"):
        node.pop("additionalProperties", None)
    if node.get("additionalProperties") is True:
        del node["additionalProperties"]
        node["x-kubernetes-preserve-unknown-fields"] = True
    if "const" in node:
        node["enum"] = [node.pop("const")]
    for key in ("properties",):
        if key in node:
            node[key] = {name: _structural(sub) for name, sub in node[key].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            node[key] = _structural(node[key])
    if node.get("type") == "object" and "properties" not in node and "additionalProperties" not in node:
        node["x-kubernetes-preserve-unknown-fields"] = True
    return node


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, schema_generator=_WithFactoryDefaults)
    defs = raw.pop("$defs", {})
    schema: dict[str, Any] = _structural(_inline(raw, defs))
    return schema


def _add_rules(schema: dict[str, Any], path: list[str], rules: list[dict[str, str]]) -> None:
    node = schema
    for name in path:
        node = node["properties"][name]
    node["x-kubernetes-validations"] = rules


CONDITIONS_LIST_TYPE = {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}


def _status_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model_schema(model)
    if "conditions" in schema["properties"]:
        schema["properties"]["conditions"].update(CONDITIONS_LIST_TYPE)
        schema["properties"]["conditions"]["items"]["required"] = ["type", "status", "reason"]
    return schema


def _root(spec: dict[str, Any], status: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "type": "object",
        "description": description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "codetether.run/v1alpha1"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }


def _crd(
    *,
    kind: str,
    plural: str,
    singular: str,
    short_names: list[str],
    schema: dict[str, Any],
    columns: list[dict[str, Any]],
    subresources: dict[str, Any],
) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{models.GROUP}",
            "labels": {"app.kubernetes.io/part-of": "codetether-operator"},
        },
        "spec": {
            "group": models.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": singular,
                "shortNames": short_names,
                "categories": [models.CATEGORY],
            },
            "versions": [
                {
                    "name": models.VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                    "subresources": subresources,
                    "additionalPrinterColumns": columns,
                }
            ],
        },
    }


def pool_crd() -> dict[str, Any]:
    spec = model_schema(models.PoolSpec)
    schema = _root(
        spec,
        _status_schema(models.PoolStatus),
        "A pool of CodeTether workers: a StatefulSet whose pods register with the server.",
    )
    schema["x-kubernetes-validations"] = POOL_NAME_RULES
    return _crd(
        kind=models.POOL_KIND,
        plural=models.POOL_PLURAL,
        singular=models.POOL_SINGULAR,
        short_names=models.POOL_SHORT_NAMES,
        schema=schema,
        subresources={
            "status": {},
            "scale": {
                "specReplicasPath": ".spec.replicas",
                "statusReplicasPath": ".status.replicas",
                "labelSelectorPath": ".status.selector",
            },
        },
        columns=[
            {"name": "Desired", "type": "integer", "jsonPath": ".spec.replicas"},
            {"name": "Ready", "type": "integer", "jsonPath": ".status.readyReplicas"},
            {"name": "Registered", "type": "integer", "jsonPath": ".status.registeredWorkers"},
            {"name": "Busy", "type": "integer", "jsonPath": ".status.busyWorkers"},
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    )


def codebase_crd() -> dict[str, Any]:
    spec = model_schema(models.CodebaseSpec)
    _add_rules(spec, ["placement"], PLACEMENT_RULES)
    spec["x-kubernetes-validations"] = CODEBASE_SPEC_RULES
    schema = _root(
        spec,
        _status_schema(models.CodebaseStatus),
        "A codebase registered on the CodeTether server for one pod of a pool (or the pool's global codebase).",
    )
    return _crd(
        kind=models.CODEBASE_KIND,
        plural=models.CODEBASE_PLURAL,
        singular=models.CODEBASE_SINGULAR,
        short_names=models.CODEBASE_SHORT_NAMES,
        schema=schema,
        subresources={"status": {}},
        columns=[
            {"name": "Pool", "type": "string", "jsonPath": ".spec.pool"},
            {"name": "Worker", "type": "string", "jsonPath": ".status.worker"},
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        ],
    )


def _peering_crd(*, cluster: bool) -> dict[str, Any]:
    # kopf's peering objects, so that two operator replicas elect one active (see docs/operator.md).
    kind = "ClusterKopfPeering" if cluster else "KopfPeering"
    plural = kind.lower() + "s"
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.kopf.dev",
            "labels": {"app.kubernetes.io/part-of": "codetether-operator"},
        },
        "spec": {
            "group": "kopf.dev",
            "scope": "Cluster" if cluster else "Namespaced",
            "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "Liveness records of kopf operators sharing one peering name.",
                            "properties": {
                                "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                            },
                        }
                    },
                }
            ],
        },
    }


def generate() -> dict[str, str]:
    """File name -> YAML text, for every CRD this project ships."""
    documents = {
        f"{models.GROUP}_{models.POOL_PLURAL}.yaml": [pool_crd()],
        f"{models.GROUP}_{models.CODEBASE_PLURAL}.yaml": [codebase_crd()],
        "kopf.dev_peerings.yaml": [_peering_crd(cluster=False), _peering_crd(cluster=True)],
    }
    header = "# Generated by `python -m codetether_operator.crdgen` from codetether_operator/models.py. Do not edit.\n"
    return {
        name: header + yaml.safe_dump_all(docs, sort_keys=False, width=120, explicit_start=True)
        for name, docs in documents.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m codetether_operator.crdgen", description="Write crds/*.yaml from the CRD models."
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="folder for the YAML files")
    parser.add_argument("--check", action="store_true", help="exit 1 when the files differ from the models")
    args = parser.parse_args(argv)
    stale = []
    for name, text in generate().items():
        path = args.output / name
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        stale.append(name)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if args.check and stale:
        print(f"out of date (run `make crds`): {', '.join(stale)}", file=sys.stderr)
        return 1
    for name in stale:
        print(f"wrote {args.output / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
