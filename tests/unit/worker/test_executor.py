"""The agent process: argv, result parsing, output batching, failure, timeout, group kill."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import pytest

from codetether_contract.models import TaskStatus
from codetether_worker.executor import (
    AgentRun,
    OutputBatcher,
    ResultCollector,
    build_agent_argv,
    run_agent,
)


def test_argv_follows_the_agent_interface() -> None:
    assert build_agent_argv("/bin/agent", "build", "fix it") == [
        "/bin/agent", "run", "--agent", "build", "--format", "json", "--", "fix it",
    ]  # fmt: skip
    assert build_agent_argv("a", "plan", "-rf /", model="m1", session_id="s1") == [
        "a", "run", "--agent", "plan", "--format", "json", "--model", "m1", "--session", "s1", "--", "-rf /",
    ]  # fmt: skip


def test_result_is_the_text_parts() -> None:
    collector = ResultCollector()
    for line in [
        '{"type": "step_start", "sessionID": "ses_1"}',
        '{"type": "text", "text": "first"}',
        "plain progress line",
        '{"type": "text", "part": {"type": "text", "text": "second"}}',
        '{"type": "tool", "tool": "write"}',
        "{not json",
        '{"part": {"type": "text", "text": "third", "sessionID": "ses_2"}}',
    ]:
        collector.feed(line + "\n")
    assert collector.result() == "first\nsecond\nthird"
    assert collector.session_id == "ses_2"
    assert list(collector.plain_tail) == ["plain progress line", "{not json"]


def test_result_is_bounded() -> None:
    collector = ResultCollector(limit=10)
    collector.feed(json.dumps({"type": "text", "text": "abcdefgh"}))
    collector.feed(json.dumps({"type": "text", "text": "ijklmnop"}))
    assert collector.result() == "abcdefgh\nij"
    assert collector.truncated


async def test_batcher_sends_every_line_in_order_in_few_batches() -> None:
    sent: list[str] = []

    async def send(text: str) -> None:
        sent.append(text)

    batcher = OutputBatcher(send, interval=0.05, max_batch_chars=100)
    batcher.start()
    for number in range(200):
        batcher.add(f"line {number}\n")
    await batcher.close()
    assert "".join(sent) == "".join(f"line {n}\n" for n in range(200))
    assert 1 < len(sent) < 200
    assert all(len(batch) <= 100 + len("line 199\n") for batch in sent)


async def test_batcher_drops_oldest_when_the_server_falls_behind() -> None:
    sent: list[str] = []
    release = asyncio.Event()

    async def slow_send(text: str) -> None:
        await release.wait()
        sent.append(text)

    batcher = OutputBatcher(slow_send, interval=0.01, max_batch_chars=50, max_pending_chars=100)
    batcher.start()
    await asyncio.sleep(0.05)
    for number in range(100):
        batcher.add(f"l{number:03d}\n")
    release.set()
    await batcher.close()
    text = "".join(sent)
    assert "l099\n" in text
    assert "output lines dropped" in text
    assert text.count("\n") < 100


async def test_batcher_survives_send_errors() -> None:
    async def failing(text: str) -> None:
        raise RuntimeError("server down")

    batcher = OutputBatcher(failing, interval=0.01)
    batcher.start()
    batcher.add("x\n")
    await batcher.close()
    assert batcher.send_errors >= 1


def _run(agent: str, cwd: Path, prompt: str, timeout: float = 30.0) -> AgentRun:
    return AgentRun(agent_bin=agent, agent_type="build", prompt=prompt, cwd=cwd, timeout=timeout)


async def test_completed_run_does_the_work_and_streams_output(
    example_agent: str, tmp_path: Path, agent_storage: Path
) -> None:
    output: list[str] = []
    started: list[float] = []

    async def send(text: str) -> None:
        output.append(text)

    outcome = await run_agent(
        _run(example_agent, tmp_path, "Say hello\n@write notes/hello.txt hello world\n@lines 3\n@echo done"),
        send_output=send,
        on_started=lambda: started.append(time.monotonic()),
        output_interval=0.05,
    )
    assert outcome.status is TaskStatus.COMPLETED, outcome.error
    assert outcome.result == "Wrote notes/hello.txt\ndone"
    assert (tmp_path / "notes" / "hello.txt").read_text() == "hello world\n"
    assert outcome.session_id and outcome.session_id.startswith("ses_")
    streamed = "".join(output)
    assert "line 1\nline 2\nline 3\n" in streamed
    assert '"type": "text"' in streamed
    assert len(started) == 1
    assert outcome.exit_code == 0


async def test_non_zero_exit_fails_with_stderr(
    example_agent: str, tmp_path: Path, agent_storage: Path
) -> None:
    outcome = await run_agent(_run(example_agent, tmp_path, "@fail the build is broken"))
    assert outcome.status is TaskStatus.FAILED
    assert outcome.exit_code == 1
    assert outcome.error == "agent exited with status 1: the build is broken"


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "\nState:\tZ" in status.read_text()  # a zombie nobody reaped yet


async def _wait_gone(pid: int) -> bool:
    for _ in range(200):
        if _gone(pid):
            return True
        await asyncio.sleep(0.05)
    return False


def _exists(path: Path) -> bool:
    return path.exists()


async def test_timeout_kills_the_whole_process_group(
    example_agent: str, tmp_path: Path, agent_storage: Path
) -> None:
    outcome = await run_agent(_run(example_agent, tmp_path, "@child 120\n@sleep 120", timeout=1.5))
    assert outcome.status is TaskStatus.FAILED
    assert outcome.timed_out
    assert outcome.error == "agent timed out after 1.5s; its process group was killed"
    child_pid = int((tmp_path / "child.pid").read_text())
    assert await _wait_gone(child_pid), "the agent's child survived the timeout"


async def test_cancelling_kills_the_agent(example_agent: str, tmp_path: Path, agent_storage: Path) -> None:
    pids: list[int] = []
    runner = asyncio.create_task(run_agent(_run(example_agent, tmp_path, "@child 120\n@sleep 120")))
    while not _exists(tmp_path / "child.pid"):  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    pids.append(int((tmp_path / "child.pid").read_text()))
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    assert await _wait_gone(pids[0])


async def test_missing_agent_fails_the_task(tmp_path: Path) -> None:
    outcome = await run_agent(_run(str(tmp_path / "no-agent"), tmp_path, "hi"))
    assert outcome.status is TaskStatus.FAILED
    assert outcome.error is not None and outcome.error.startswith("cannot start agent")


async def test_plain_output_agent_result_falls_back_to_stdout(tmp_path: Path) -> None:
    script = tmp_path / "plain-agent"
    script.write_text('#!/bin/sh\necho "working"\necho "answer: 42"\n')
    script.chmod(0o755)
    outcome = await run_agent(_run(str(script), tmp_path, "q"))
    assert outcome.status is TaskStatus.COMPLETED
    assert outcome.result == "working\nanswer: 42"


async def test_leftover_background_child_does_not_hang_the_task(tmp_path: Path) -> None:
    script = tmp_path / "leaky-agent"
    script.write_text('#!/bin/sh\nsleep 300 &\necho \'{"type": "text", "text": "ok"}\'\n')
    script.chmod(0o755)
    outcome = await asyncio.wait_for(run_agent(_run(str(script), tmp_path, "q")), 20)
    assert outcome.status is TaskStatus.COMPLETED
    assert outcome.result == "ok"
