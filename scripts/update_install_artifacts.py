#!/usr/bin/env python3
"""Regenerate every generated install artefact, in dependency order (run after `make crds` or any
chart change): the chart's crds/ copy, the chart README's values table, the plain manifest
(deploy/manifests/install.yaml) and Argo CD's health-check ConfigMap. `--check` only reports what
is stale and exits 1 if anything is."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts import argocd_health_config, chart_values_doc, install_manifests, sync_chart_crds

STEPS = (
    ("chart crds/", sync_chart_crds.main),
    ("chart README values table", chart_values_doc.main),
    ("deploy/manifests/install.yaml", install_manifests.main),
    ("Argo CD health ConfigMap", argocd_health_config.main),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale artefacts; exit 1 if any")
    args = parser.parse_args(argv)
    failed = []
    for name, step in STEPS:
        if step(["--check"] if args.check else []) != 0:
            failed.append(name)
    if failed:
        print(("stale: " if args.check else "failed: ") + ", ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
