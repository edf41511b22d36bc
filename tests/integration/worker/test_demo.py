"""``make demo`` end to end, and that it leaves nothing running when stopped early."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "status").read_text()
        except OSError:
            continue
        if text in cmdline and "\nState:\tZ" not in state:
            found.append(int(entry.name))
    return found


def test_demo_completes_and_shows_the_routing() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "codetether_worker.demo", "--tasks-per-codebase", "2"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "All 6 tasks completed." in out
    assert re.search(r"frontend\s+\(pinned to worker-1\) -> worker-1 x2", out)
    assert re.search(r"backend\s+\(pinned to worker-2\) -> worker-2 x2", out)
    assert re.search(r"global\s+\(any worker with a global codebase: worker-3\) -> worker-3 x2", out)
    assert "GET /v1/agent/workers" in out and '"tasks_completed": 2' in out
    folder = re.search(r"work folder (\S+)\)", out)
    assert folder is not None
    assert not Path(folder.group(1)).exists()  # cleaned up after success
    assert _processes_mentioning(folder.group(1)) == []


def test_demo_stopped_early_stops_everything_it_started() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "codetether_worker.demo", "--tasks-per-codebase", "50"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    folder = ""
    ports: list[int] = []
    try:
        for line in process.stdout:
            match = re.search(r"work folder (\S+)\)", line)
            if match:
                folder = match.group(1)
            listening = re.search(r"(?:server|redis)\s+\w+://127\.0\.0\.1:(\d+)", line)
            if listening:
                ports.append(int(listening.group(1)))
            if line.startswith("Submitting"):
                break
        assert folder
        process.send_signal(signal.SIGTERM)
        rest = process.communicate(timeout=60)[0]
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130
    assert "Stopping everything the demo started" in rest
    deadline = time.monotonic() + 10
    while _processes_mentioning(folder) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _processes_mentioning(folder) == []  # the workers
    assert len(ports) == 2 and not any(_listening(port) for port in ports)  # the server and Redis
    subprocess.run(["rm", "-rf", folder], check=False)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True
