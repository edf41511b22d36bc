"""kube.py declares every API call it makes (the Helm chart's RBAC is derived from it)."""

from __future__ import annotations

import ast
from pathlib import Path

from codetether_operator import kube

SOURCE = Path(kube.__file__).read_text()
RESOURCES = {name: value for name, value in vars(kube).items() if isinstance(value, kube.Resource)}


def _calls() -> set[tuple[str, str, str]]:
    found = set()
    for node in ast.walk(ast.parse(SOURCE)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "_call":
            verb = node.args[0]
            assert isinstance(verb, ast.Constant), ast.unparse(node)
            target = node.args[1]
            if isinstance(target, ast.Name):
                resources = [RESOURCES[target.id]]
            else:  # self._child_resource(kind): any child kind
                resources = list(kube.Kube._CHILD_RESOURCES.values())
            for resource in resources:
                found.add((resource.group, resource.plural, verb.value))
    return found


def test_every_call_is_declared_and_every_declaration_used() -> None:
    declared = {(g, r, v) for g, r, verbs in kube.API_CALLS for v in verbs}
    assert _calls() == declared


def test_no_other_module_talks_to_kubernetes() -> None:
    package = Path(kube.__file__).parent
    for path in package.rglob("*.py"):
        if path.name in ("kube.py",):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = (
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                )
                assert not any(n.split(".")[0] in ("kubernetes", "urllib3") for n in names), path


def test_rbac_rules_cover_operator_and_kopf() -> None:
    rules = {(r["apiGroups"][0], r["resources"][0]): set(r["verbs"]) for r in kube.rbac_rules()}
    assert rules[("apps", "statefulsets")] >= {"get", "create", "patch"}
    assert rules[("codetether.run", "codebases")] >= {"list", "watch", "patch"}
    assert rules[("", "events")] == {"create"}
    assert ("", "secrets") in rules and rules[("", "secrets")] == {"get"}
