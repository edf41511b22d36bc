#!/usr/bin/env python3
"""Write the values table of charts/codetether-worker/README.md from values.yaml.

Each value's description is its `# --` comment in values.yaml (continued on the following `#`
lines), so the table and the defaults cannot drift apart. The table sits between the
`<!-- values:start -->` and `<!-- values:end -->` markers. `--check` exits 1 when it is stale.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "codetether-worker"
START, END = "<!-- values:start -->", "<!-- values:end -->"
KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.-]+):")


def described_keys(values_text: str) -> dict[str, str]:
    """Dotted path -> description, for every key preceded by a `# --` comment."""
    descriptions: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    pending: list[str] | None = None
    for line in values_text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            pending = [stripped.removeprefix("# --").strip()]
            continue
        if stripped.startswith("#"):
            if pending is not None:
                pending.append(stripped.removeprefix("#").strip())
            continue
        match = KEY_LINE.match(line)
        if not match:
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match["key"]))
        if pending is not None:
            descriptions[".".join(key for _, key in stack)] = " ".join(pending)
            pending = None
    return descriptions


def _lookup(values: dict[str, Any], path: str) -> Any:
    node: Any = values
    for key in path.split("."):
        node = node[key]
    return node


def values_table(chart_dir: Path = CHART) -> str:
    text = (chart_dir / "values.yaml").read_text()
    values = yaml.safe_load(text)
    rows = ["| Key | Type | Default | Description |", "|---|---|---|---|"]
    for path, description in described_keys(text).items():
        default = _lookup(values, path)
        kind = {bool: "bool", int: "int", str: "string", list: "list", dict: "object"}[type(default)]
        shown = json.dumps(default, separators=(",", ":")).replace("|", "\\|")
        cell = description.replace("|", "\\|")
        rows.append(f"| `{path}` | {kind} | `{shown}` | {cell} |")
    return "\n".join(rows)


def readme_with_table(readme: str, table: str) -> str:
    if START not in readme or END not in readme:
        raise SystemExit(f"README.md lacks the {START} / {END} markers")
    before, rest = readme.split(START, 1)
    _, after = rest.split(END, 1)
    return f"{before}{START}\n{table}\n{END}{after}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when stale")
    args = parser.parse_args(argv)
    readme_path = CHART / "README.md"
    current = readme_path.read_text()
    wanted = readme_with_table(current, values_table())
    if args.check:
        if current != wanted:
            print(
                f"{readme_path} values table is stale: run python scripts/chart_values_doc.py",
                file=sys.stderr,
            )
            return 1
        return 0
    readme_path.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
