"""Dockerfile.worker: the properties the issue asks for, read from the file (hadolint runs in tests/unit/install)."""

from __future__ import annotations

import json
import re
from pathlib import Path

DOCKERFILE = Path(__file__).resolve().parents[3] / "Dockerfile.worker"


def instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last_from:]


def test_multi_stage_on_a_pinned_slim_python() -> None:
    steps = instructions()
    default_image = next(
        rest for keyword, rest in steps if keyword == "ARG" and rest.startswith("PYTHON_IMAGE=")
    )
    assert re.fullmatch(r"PYTHON_IMAGE=python:3\.11\.\d+-slim-\w+", default_image)
    assert sum(1 for keyword, _ in steps if keyword == "FROM") == 2


def test_final_stage_has_no_build_tools_and_runs_as_non_root() -> None:
    stage = final_stage()
    run_lines = " ".join(rest for keyword, rest in stage if keyword == "RUN")
    for tool in ("gcc", "build-essential", "make ", "pip install"):
        assert tool not in run_lines
    [user] = [rest for keyword, rest in stage if keyword == "USER"]
    assert user.split(":")[0] not in ("0", "root")


def test_exec_form_entrypoint_and_configurable_agent() -> None:
    stage = final_stage()
    [entrypoint] = [rest for keyword, rest in stage if keyword == "ENTRYPOINT"]
    argv = json.loads(entrypoint)  # exec form: a JSON array, no shell to swallow SIGTERM
    assert argv[-1] == "codetether-worker"
    env = " ".join(rest for keyword, rest in stage if keyword == "ENV")
    assert "A2A_AGENT_BIN=codetether-example-agent" in env
