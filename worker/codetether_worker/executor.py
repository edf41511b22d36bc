"""Run the agent for one task: its own process group, output streamed in batches, a bounded time.

The agent interface: ``<agent_bin> run --agent <agent_type> --format json [--model M] [--session S]
-- <prompt>``, run in the codebase folder. Its JSON lines with ``text`` parts are the result; a
non-zero exit fails the task with stderr; running past the timeout kills the whole process group.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codetether_contract.models import MAX_OUTPUT_CHUNK_CHARS, MAX_RESULT_CHARS, TaskStatus
from codetether_worker.aio import wait_event

log = logging.getLogger(__name__)

READ_CHUNK = 64 * 1024
STDERR_TAIL_CHARS = 8_000
KILL_GRACE_SECONDS = 2.0
PIPE_DRAIN_SECONDS = 2.0


def build_agent_argv(
    agent_bin: str, agent_type: str, prompt: str, model: str | None = None, session_id: str | None = None
) -> list[str]:
    argv = [agent_bin, "run", "--agent", agent_type, "--format", "json"]
    if model:
        argv += ["--model", model]
    if session_id:
        argv += ["--session", session_id]
    # "--" ends the options, so a prompt starting with "-" is never read as a flag.
    return [*argv, "--", prompt]


def _text_of(event: Mapping[str, Any]) -> str | None:
    """The text of a ``text`` part: ``{"type": "text", "text": ...}`` or nested under ``part``."""
    part = event.get("part")
    if isinstance(part, Mapping) and part.get("type") == "text" and isinstance(part.get("text"), str):
        return str(part["text"])
    if event.get("type") == "text" and isinstance(event.get("text"), str):
        return str(event["text"])
    return None


def _session_of(event: Mapping[str, Any]) -> str | None:
    for holder in (event, event.get("part")):
        if isinstance(holder, Mapping):
            for key in ("session_id", "sessionID", "sessionId"):
                value = holder.get(key)
                if isinstance(value, str) and value:
                    return value
    return None


class ResultCollector:
    """Reads stdout lines; keeps the text parts (the result) and the agent's session id."""

    def __init__(self, limit: int = MAX_RESULT_CHARS) -> None:
        self.limit = limit
        self.texts: list[str] = []
        self.session_id: str | None = None
        self._size = 0
        self.truncated = False
        self.plain_tail: deque[str] = deque(maxlen=50)

    def feed(self, line: str) -> None:
        stripped = line.strip()
        if not stripped:
            return
        event: Any = None
        if stripped.startswith("{"):
            with contextlib.suppress(ValueError):
                event = json.loads(stripped)
        if not isinstance(event, dict):
            self.plain_tail.append(stripped)
            return
        self.session_id = _session_of(event) or self.session_id
        text = _text_of(event)
        if text is None:
            return
        if self._size + len(text) > self.limit:
            text = text[: max(0, self.limit - self._size)]
            self.truncated = True
        self._size += len(text)
        if text:
            self.texts.append(text)

    def result(self) -> str:
        return "\n".join(self.texts)


class OutputBatcher:
    """Sends output lines in batches: at most every ``interval`` seconds, or sooner when large.

    Sending happens beside the reading, so a slow server never blocks the agent's pipes; when the
    server is far behind, the oldest unsent lines are dropped and the drop is said in the output.
    """

    def __init__(
        self,
        send: Callable[[str], Awaitable[None]],
        *,
        interval: float = 0.5,
        max_batch_chars: int = 64_000,
        max_pending_chars: int = MAX_OUTPUT_CHUNK_CHARS // 2,
    ) -> None:
        self._send = send
        self._interval = interval
        self._max_batch = max_batch_chars
        self._max_pending = max_pending_chars
        self._lines: deque[str] = deque()
        self._pending_chars = 0
        self._dropped = 0
        self._wake = asyncio.Event()
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self.batches_sent = 0
        self.send_errors = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="output-batcher")

    def add(self, line: str) -> None:
        self._lines.append(line)
        self._pending_chars += len(line)
        while self._pending_chars > self._max_pending and len(self._lines) > 1:
            self._pending_chars -= len(self._lines.popleft())
            self._dropped += 1
        if self._pending_chars >= self._max_batch:
            self._wake.set()

    def _take_batch(self) -> str:
        parts: list[str] = []
        size = 0
        if self._dropped:
            parts.append(f"[codetether-worker: {self._dropped} output lines dropped: server too slow]\n")
            self._dropped = 0
        while self._lines and (size < self._max_batch or not parts):
            line = self._lines.popleft()
            self._pending_chars -= len(line)
            parts.append(line)
            size += len(line)
        return "".join(parts)

    async def _flush(self) -> None:
        while self._lines or self._dropped:
            batch = self._take_batch()
            try:
                await self._send(batch)
                self.batches_sent += 1
            except Exception as exc:  # output is best effort; the result still gets reported
                self.send_errors += 1
                log.warning("sending task output failed: %s", exc)

    async def _run(self) -> None:
        while not self._closed:
            await wait_event(self._wake, self._interval)
            self._wake.clear()
            await self._flush()

    async def close(self) -> None:
        self._closed = True
        self._wake.set()
        if self._task is not None:
            await self._task
        await self._flush()


@dataclass(frozen=True)
class AgentRun:
    agent_bin: str
    agent_type: str
    prompt: str
    cwd: Path
    timeout: float
    model: str | None = None
    session_id: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass
class AgentOutcome:
    status: TaskStatus
    result: str | None = None
    error: str | None = None
    session_id: str | None = None
    exit_code: int | None = None
    timed_out: bool = False
    duration: float = 0.0


async def _signal_group(pgid: int, sig: signal.Signals) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


async def terminate_group(process: asyncio.subprocess.Process, grace: float = KILL_GRACE_SECONDS) -> None:
    """SIGTERM the agent's process group, SIGKILL it after ``grace``; leftovers of the group too."""
    pgid = process.pid
    if process.returncode is None and await _signal_group(pgid, signal.SIGTERM):
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(process.wait()), grace)
    await _signal_group(pgid, signal.SIGKILL)
    # A grandchild that left the group may still hold the pipes (and so wait()) open: bounded.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(process.wait()), grace)


async def _pump(stream: asyncio.StreamReader | None, on_line: Callable[[str], None]) -> None:
    if stream is None:
        return
    buffer = b""
    while True:
        chunk = await stream.read(READ_CHUNK)
        if not chunk:
            break
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for raw in lines:
            on_line(raw.decode("utf-8", errors="replace") + "\n")
        if len(buffer) > MAX_OUTPUT_CHUNK_CHARS // 4:  # a huge line without newline: pass it on in pieces
            on_line(buffer.decode("utf-8", errors="replace"))
            buffer = b""
    if buffer:
        on_line(buffer.decode("utf-8", errors="replace") + "\n")


async def _exit_seen(process: asyncio.subprocess.Process) -> None:
    # Process.wait() in Python 3.11 also waits for the pipes to close; the return code comes first.
    while process.returncode is None:  # noqa: ASYNC110 - no event exists for this
        await asyncio.sleep(0.05)


async def run_agent(
    run: AgentRun,
    *,
    send_output: Callable[[str], Awaitable[None]] | None = None,
    on_started: Callable[[], None] | None = None,
    output_interval: float = 0.5,
) -> AgentOutcome:
    """Run the agent to the end (or the timeout); cancelling it kills the process group."""
    argv = build_agent_argv(run.agent_bin, run.agent_type, run.prompt, run.model, run.session_id)
    started = time.monotonic()
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            cwd=str(run.cwd),
            env={**os.environ, **run.env},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # its own process group: a timeout kills everything it started
        )
    except OSError as exc:
        return AgentOutcome(
            status=TaskStatus.FAILED,
            error=f"cannot start agent {run.agent_bin}: {exc.strerror or exc}",
            duration=time.monotonic() - started,
        )
    if on_started is not None:
        on_started()

    collector = ResultCollector()
    stderr_tail: deque[str] = deque()
    stderr_chars = 0
    batcher = OutputBatcher(send_output, interval=output_interval) if send_output else None
    if batcher:
        batcher.start()

    def on_stdout(line: str) -> None:
        collector.feed(line)
        if batcher:
            batcher.add(line)

    def on_stderr(line: str) -> None:
        nonlocal stderr_chars
        stderr_tail.append(line)
        stderr_chars += len(line)
        while stderr_chars > STDERR_TAIL_CHARS and len(stderr_tail) > 1:
            stderr_chars -= len(stderr_tail.popleft())
        if batcher:
            batcher.add(line)

    readers: asyncio.Future[Any] = asyncio.gather(
        _pump(process.stdout, on_stdout), _pump(process.stderr, on_stderr)
    )
    exited: asyncio.Future[Any] = asyncio.create_task(_exit_seen(process))
    timed_out = False
    try:
        async with asyncio.timeout(run.timeout):
            await asyncio.wait({readers, exited}, return_when=asyncio.FIRST_COMPLETED)
            if not readers.done():
                # The agent exited but a child it left behind holds the pipes open: not forever.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(readers), PIPE_DRAIN_SECONDS)
    except TimeoutError:
        timed_out = True
    finally:
        exited.cancel()
        await asyncio.shield(terminate_group(process))
        readers.cancel()
        await asyncio.gather(readers, exited, return_exceptions=True)
        # Process has no public close; closing its transport frees the pipes even when a stray
        # grandchild still holds them, instead of leaving that to the garbage collector.
        transport = getattr(process, "_transport", None)
        if transport is not None:
            transport.close()
        if batcher:
            await asyncio.shield(batcher.close())

    duration = time.monotonic() - started
    stderr_text = "".join(stderr_tail).strip()
    if timed_out:
        return AgentOutcome(
            status=TaskStatus.FAILED,
            error=f"agent timed out after {run.timeout:g}s; its process group was killed",
            session_id=collector.session_id,
            exit_code=process.returncode,
            timed_out=True,
            duration=duration,
        )
    if process.returncode != 0:
        reason = f"agent exited with status {process.returncode}"
        detail = stderr_text or "\n".join(collector.plain_tail)
        return AgentOutcome(
            status=TaskStatus.FAILED,
            error=f"{reason}: {detail}" if detail else reason,
            session_id=collector.session_id,
            exit_code=process.returncode,
            duration=duration,
        )
    result = collector.result() if collector.texts else "\n".join(collector.plain_tail)
    return AgentOutcome(
        status=TaskStatus.COMPLETED,
        result=result,
        session_id=collector.session_id,
        exit_code=0,
        duration=duration,
    )
