"""The example agent honours the agent interface and its directives."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path


def run(
    agent: str, cwd: Path, prompt: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [agent, "run", "--agent", "build", "--format", "json", "--model", "m1", "--", prompt],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def events(stdout: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_default_work_reads_the_codebase(example_agent: str, tmp_path: Path, agent_storage: Path) -> None:
    codebase = tmp_path / "codebase"
    (codebase / "src").mkdir(parents=True)
    (codebase / "src" / "a.py").write_text("x = 1\ny = 2\n")
    (codebase / "b.txt").write_text("one line\n")
    done = run(example_agent, codebase, "How big is this?")
    assert done.returncode == 0, done.stderr
    texts = [e["text"] for e in events(done.stdout) if e.get("type") == "text"]
    assert texts == ["codebase: 2 files, 3 lines"]


def test_write_refuses_paths_outside_the_codebase(
    example_agent: str, tmp_path: Path, agent_storage: Path
) -> None:
    done = run(example_agent, tmp_path, "@write ../escape.txt x")
    assert done.returncode == 1
    assert "leaves the codebase" in done.stderr
    assert not (tmp_path.parent / "escape.txt").exists()


def test_sleep_only_on_the_named_worker(example_agent: str, tmp_path: Path, agent_storage: Path) -> None:
    done = run(
        example_agent,
        tmp_path,
        "@sleep 60 on worker-9\n@echo quick",
        env={"CODETETHER_WORKER_ID": "worker-1"},
    )
    assert done.returncode == 0
    assert [e["text"] for e in events(done.stdout) if e.get("type") == "text"] == ["quick"]


def test_noop_records_no_session(example_agent: str, tmp_path: Path, agent_storage: Path) -> None:
    done = run(example_agent, tmp_path, "@noop")
    assert done.returncode == 0
    assert [e for e in events(done.stdout) if e.get("type") == "text"] == [{"type": "text", "text": "noop"}]
    assert not agent_storage.exists()


def test_first_line_says_when_the_agent_started(
    example_agent: str, tmp_path: Path, agent_storage: Path
) -> None:
    done = run(example_agent, tmp_path, "@noop")
    first = events(done.stdout)[0]
    assert first["type"] == "step_start" and isinstance(first["time"], float)


def test_unknown_directive_fails(example_agent: str, tmp_path: Path, agent_storage: Path) -> None:
    done = run(example_agent, tmp_path, "@explode")
    assert done.returncode == 1
    assert "unknown directive @explode" in done.stderr


def test_session_records_the_task(example_agent: str, tmp_path: Path, agent_storage: Path) -> None:
    done = run(example_agent, tmp_path, "@echo hi", env={"CODETETHER_TASK_ID": "task-7"})
    session_id = next(e["session_id"] for e in events(done.stdout) if e.get("type") == "session")
    record = json.loads((agent_storage / "sessions" / f"{session_id}.json").read_text())
    assert record["task_id"] == "task-7"
    assert record["model"] == "m1"
    assert record["directory"] == str(tmp_path.resolve())


def test_an_unwritable_storage_folder_does_not_fail_the_task(example_agent: str, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the storage folder should be")
    done = run(
        example_agent, tmp_path, "@echo still works", env={"CODETETHER_STORAGE_DIR": str(blocker / "storage")}
    )
    assert done.returncode == 0, done.stderr
    assert [e["text"] for e in events(done.stdout) if e.get("type") == "text"] == ["still works"]
    assert "not recording the session" in done.stderr
