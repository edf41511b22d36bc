"""The README's examples are things the code accepts."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from codetether_operator.models import parse_codebase_spec, parse_pool_spec

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_readme_shows_the_two_commands() -> None:
    assert "make demo" in README
    assert "make test" in README
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)


def test_readme_custom_resources_are_valid() -> None:
    block = re.search(r"<<'YAML'\n(.*?)\nYAML\n", README, re.S)
    assert block, "README lost its example resources"
    parsers = {"CodetetherWorkerPool": parse_pool_spec, "Codebase": parse_codebase_spec}
    kinds = []
    for doc in yaml.safe_load_all(block.group(1)):
        assert doc["apiVersion"] == "codetether.run/v1alpha1"
        parsers[doc["kind"]](doc["spec"])
        kinds.append(doc["kind"])
    assert sorted(kinds) == ["Codebase", "CodetetherWorkerPool"]


def test_readme_links_resolve() -> None:
    for target in re.findall(r"\]\(((?!https?:)[^)#]+)\)", README):
        assert (ROOT / target).exists(), target
