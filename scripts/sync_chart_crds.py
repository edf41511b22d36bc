#!/usr/bin/env python3
"""Copy the generated CRDs (crds/*.yaml) into the Helm chart's crds/ folder.

Helm installs a chart's crds/ before its templates, so the chart must carry the very files that
`make crds` generates. `--check` changes nothing and exits 1 when the two folders differ.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "crds"
TARGET = ROOT / "charts" / "codetether-worker" / "crds"


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def differences(source: Path = SOURCE, target: Path = TARGET) -> list[str]:
    """What differs between the two folders, one line each; empty when they hold the same files."""
    wanted = {p.name: p.read_bytes() for p in sorted(source.glob("*.yaml"))}
    present = {p.name: p.read_bytes() for p in sorted(target.glob("*.yaml"))} if target.is_dir() else {}
    problems = [f"missing in {_shown(target)}: {name}" for name in wanted if name not in present]
    problems += [f"not in {_shown(source)}: {name}" for name in present if name not in wanted]
    problems += [f"differs: {name}" for name in wanted if name in present and wanted[name] != present[name]]
    return problems


def sync(source: Path = SOURCE, target: Path = TARGET) -> None:
    target.mkdir(parents=True, exist_ok=True)
    names = {p.name for p in source.glob("*.yaml")}
    for stale in target.glob("*.yaml"):
        if stale.name not in names:
            stale.unlink()
    for path in source.glob("*.yaml"):
        (target / path.name).write_bytes(path.read_bytes())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report differences; exit 1 if any")
    args = parser.parse_args(argv)
    if not any(SOURCE.glob("*.yaml")):
        print(f"no CRDs in {SOURCE}; run `make crds` first", file=sys.stderr)
        return 2
    if args.check:
        problems = differences()
        for line in problems:
            print(line, file=sys.stderr)
        if problems:
            print("run: python scripts/sync_chart_crds.py", file=sys.stderr)
        return 1 if problems else 0
    sync()
    return 0


if __name__ == "__main__":
    sys.exit(main())
