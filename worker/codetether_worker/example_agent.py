"""``codetether-example-agent``: a small agent honouring the worker's agent interface.

    codetether-example-agent run --agent TYPE --format json [--model M] [--session S] -- PROMPT

It works in the current folder (the codebase), prints JSON lines (``text`` parts are the result),
and records its session in the agent storage folder the way the worker's session sync reads it.
Lines of the prompt that start with ``@`` are directives, run in order:

    @write PATH TEXT       write TEXT (plus a newline) to PATH, relative to the codebase
    @append PATH TEXT      append TEXT (plus a newline) to PATH
    @echo TEXT             answer TEXT
    @lines N               print N plain output lines
    @sleep SECONDS [on W]  sleep; with "on W" only when run by worker W (CODETETHER_WORKER_ID)
    @child SECONDS         leave a child process sleeping, its pid in child.pid (process group tests)
    @fail [MESSAGE]        print MESSAGE on stderr and exit with status 1
    @noop                  do nothing else and record no session: the fastest possible task

Without directives it reads the codebase and answers with its file and line counts.
Standard library only, so it starts fast.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from codetether_worker.storage_layout import default_agent_storage, messages_folder, session_file

EXIT_FAILED = 1
EXIT_USAGE = 2


def emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def _now_ms() -> int:
    return int(time.time() * 1000)


def _inside(root: Path, relative: str) -> Path:
    target = (root / relative).resolve()
    if target != root and root not in target.parents:
        raise ValueError(f"path {relative!r} leaves the codebase")
    return target


def _count_codebase(root: Path) -> tuple[int, int]:
    files = lines = 0
    for path in root.rglob("*"):
        if ".git" in path.parts or not path.is_file():
            continue
        files += 1
        try:
            with path.open("rb") as handle:
                lines += sum(1 for _ in handle)
        except OSError:
            continue
    return files, lines


class Session:
    """The session record this run adds to (or starts) in the storage folder."""

    def __init__(self, storage: Path, session_id: str | None, title: str, agent: str, model: str | None):
        self.storage = storage
        self.id = session_id or f"ses_{uuid.uuid4().hex[:16]}"
        self.title = title
        self.agent = agent
        self.model = model
        self.unwritable = False

    def _write_json(self, path: Path, data: dict[str, Any]) -> None:
        # The session record is a by-product: a storage folder we cannot write must not fail the task.
        if self.unwritable:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            temporary.write_text(json.dumps(data), encoding="utf-8")
            temporary.replace(path)  # readers never see half a file
        except OSError as exc:
            self.unwritable = True
            print(
                f"codetether-example-agent: not recording the session in {self.storage}: {exc}",
                file=sys.stderr,
            )

    def save(self, directory: Path) -> None:
        path = session_file(self.storage, self.id)
        record: dict[str, Any] = {}
        if path.is_file():
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
            except ValueError:
                record = {}
        now = _now_ms()
        record.setdefault("id", self.id)
        record.setdefault("title", self.title)
        record.setdefault("created", now)
        record.update(
            directory=str(directory),
            agent=self.agent,
            model=self.model,
            task_id=os.environ.get("CODETETHER_TASK_ID"),
            updated=now,
        )
        self._write_json(path, record)

    def add_message(self, role: str, text: str, tools: list[str]) -> None:
        message_id = f"msg_{time.time_ns():x}{uuid.uuid4().hex[:4]}"
        parts: list[dict[str, Any]] = [{"type": "text", "text": text}]
        parts += [{"type": "tool", "tool": tool, "status": "completed"} for tool in tools]
        message = {"id": message_id, "role": role, "created": _now_ms(), "parts": parts}
        self._write_json(messages_folder(self.storage, self.id) / f"{message_id}.json", message)


def run(args: argparse.Namespace) -> int:
    emit({"type": "step_start", "time": time.time(), "pid": os.getpid()})
    cwd = Path.cwd().resolve()
    prompt: str = args.prompt
    directives = [line.strip()[1:] for line in prompt.splitlines() if line.strip().startswith("@")]
    if any(d.split(maxsplit=1)[0:1] == ["noop"] for d in directives):
        emit({"type": "text", "text": "noop"})
        return 0

    storage = default_agent_storage()
    title = next((line.strip() for line in prompt.splitlines() if line.strip()), "task")[:200]
    session = Session(storage, args.session, title, args.agent, args.model)
    emit({"type": "session", "session_id": session.id})
    session.save(cwd)
    session.add_message("user", prompt, [])

    answers: list[str] = []
    tools: list[str] = []
    worker = os.environ.get("CODETETHER_WORKER_ID", "")
    for directive in directives:
        verb, _, rest = directive.partition(" ")
        rest = rest.strip()
        if verb in ("write", "append"):
            relative, _, text = rest.partition(" ")
            if not relative:
                print(f"@{verb} needs a path", file=sys.stderr)
                return EXIT_FAILED
            try:
                target = _inside(cwd, relative)
            except ValueError as exc:
                print(str(exc), file=sys.stderr)
                return EXIT_FAILED
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("a" if verb == "append" else "w", encoding="utf-8") as handle:
                handle.write(text + "\n")
            tools.append(verb)
            emit({"type": "tool", "tool": verb, "path": relative})
            answers.append(f"{'Appended to' if verb == 'append' else 'Wrote'} {relative}")
        elif verb == "echo":
            answers.append(rest)
        elif verb == "lines":
            for number in range(int(rest or "1")):
                print(f"line {number + 1}", flush=True)
        elif verb == "sleep":
            seconds, _, condition = rest.partition(" on ")
            if not condition or condition.strip() == worker:
                tools.append("sleep")
                time.sleep(float(seconds))
        elif verb == "child":
            child = subprocess.Popen(
                [sys.executable, "-c", f"import time; time.sleep({float(rest or '60')})"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            (cwd / "child.pid").write_text(str(child.pid), encoding="utf-8")
            tools.append("child")
        elif verb == "fail":
            message = rest or "failing as the prompt asked"
            session.add_message("assistant", f"failed: {message}", tools)
            print(message, file=sys.stderr, flush=True)
            return EXIT_FAILED
        else:
            print(f"unknown directive @{verb}", file=sys.stderr)
            return EXIT_FAILED

    if not answers:
        files, lines = _count_codebase(cwd)
        tools.append("read")
        answers.append(f"{cwd.name}: {files} files, {lines} lines")
    answer = "\n".join(answers)
    emit({"type": "text", "text": answer})
    session.add_message("assistant", answer, tools)
    session.save(cwd)
    emit({"type": "step_finish", "time": time.time(), "session_id": session.id})
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="codetether-example-agent",
        description="Example agent for the CodeTether worker (see the module docstring for directives).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="run one prompt in the current folder")
    run_parser.add_argument("--agent", default="build", help="agent type")
    run_parser.add_argument("--format", default="json", choices=["json"], help="output format")
    run_parser.add_argument("--model", default=None, help="model name (recorded only)")
    run_parser.add_argument("--session", default=None, help="continue this session")
    run_parser.add_argument("prompt", help="the task prompt (after --)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except (ValueError, OSError) as exc:
        print(f"codetether-example-agent: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    raise SystemExit(main())
