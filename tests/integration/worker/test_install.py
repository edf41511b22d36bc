"""deploy/systemd/install.sh into a scratch prefix, then the installed worker serves a real server."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from codetether_contract.models import TaskStatus
from tests.integration.worker.conftest import Harness, wait_until

REPO = Path(__file__).resolve().parents[3]
INSTALL = REPO / "deploy" / "systemd" / "install.sh"


def _install(root: Path) -> dict[str, Path]:
    paths = {"prefix": root / "opt", "config": root / "etc", "systemd": root / "systemd"}
    env = {
        **os.environ,
        "A2A_PREFIX": str(paths["prefix"]),
        "A2A_CONFIG_DIR": str(paths["config"]),
        "A2A_SYSTEMD_DIR": str(paths["systemd"]),
        "A2A_SKIP_USER": "1",
        "A2A_SKIP_SYSTEMCTL": "1",
        "PYTHON": sys.executable,
    }
    done = subprocess.run(["bash", str(INSTALL)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Installed. Next:" in done.stdout
    return paths


async def test_install_then_run_the_installed_worker(harness: Harness) -> None:
    paths = _install(harness.root / "install")
    venv_bin = paths["prefix"] / "venv" / "bin"
    config = json.loads((paths["config"] / "config.json").read_text())
    assert config["poll_interval"] == 5 and config["capabilities"] == ["agent", "build", "deploy"]
    assert config["worker_name"] != "@HOSTNAME@"
    assert oct((paths["config"] / "env").stat().st_mode & 0o777) == "0o600"

    unit = (paths["systemd"] / "a2a-agent-worker.service").read_text()
    assert f"ExecStart={venv_bin}/codetether-worker --config {paths['config']}/config.json" in unit
    for line in ("NoNewPrivileges=true", "ProtectSystem=full", "ProtectHome=read-only", "KillMode=mixed"):
        assert line in unit
    if shutil.which("systemd-analyze"):
        verify = _run(["systemd-analyze", "verify", str(paths["systemd"] / "a2a-agent-worker.service")])
        assert verify.returncode == 0, verify.stderr

    # The worker-only install pulls neither the server's nor the operator's dependencies.
    freeze = _run([str(venv_bin / "pip"), "freeze"]).stdout
    assert "fastapi" not in freeze.lower() and "kopf" not in freeze.lower()

    # Run it the way the unit does, with the operator's edits to the config file.
    codebase = harness.folder("installed-codebase")
    config.update(
        server_url=harness.server.url,
        worker_name="installed",
        redis_url="none",
        poll_interval=0.5,
        health_port=0,
        agent_bin=str(venv_bin / "codetether-example-agent"),
        codebases=[{"name": "site", "path": str(codebase), "description": "installed"}],
    )
    (paths["config"] / "config.json").write_text(json.dumps(config))
    process = _start(
        [str(venv_bin / "codetether-worker"), "--config", str(paths["config"] / "config.json")],
        log=harness.root / "installed.log",
        env={"PATH": "/usr/bin:/bin", "HOME": str(harness.root)},
    )
    try:
        codebase_id = await harness.codebase_id("site", "installed")
        task = await harness.task("@write index.html <h1>hi</h1>", codebase_id)
        [done] = await harness.finished([task.id])
        assert done.status is TaskStatus.COMPLETED and done.worker_id == "installed"
        assert (codebase / "index.html").read_text() == "<h1>hi</h1>\n"
        process.send_signal(signal.SIGTERM)
        assert await wait_until(_exit_code(process), what="installed worker exit") == ("exit", 0)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


def _start(argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)


def _exit_code(process: subprocess.Popen[bytes]) -> Callable[[], Awaitable[tuple[str, int] | None]]:
    async def probe() -> tuple[str, int] | None:
        code = process.poll()
        return None if code is None else ("exit", code)

    return probe


def test_installer_is_valid_bash() -> None:
    assert subprocess.run(["bash", "-n", str(INSTALL)]).returncode == 0
