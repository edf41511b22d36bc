"""Value sets the chart is rendered with: charts/codetether-worker/ci/<name>-values.yaml (the
defaults and the combinations users are told about), shared with chart-testing's `ct lint`."""

from __future__ import annotations

from typing import Any

import yaml

from scripts.install_manifests import CHART


def _load() -> dict[str, dict[str, Any]]:
    sets = {}
    for path in sorted((CHART / "ci").glob("*-values.yaml")):
        sets[path.name.removesuffix("-values.yaml")] = yaml.safe_load(path.read_text()) or {}
    return sets


VALUE_SETS: dict[str, dict[str, Any]] = _load()
EVERYTHING_ON: dict[str, Any] = VALUE_SETS["everything-on"]
