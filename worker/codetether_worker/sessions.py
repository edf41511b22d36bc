"""Agent storage folder -> session sync payloads, per codebase.

The agent records sessions as ``storage_layout`` describes. Reading is pure file work (no network);
``SessionSyncer`` decides what changed since the last sync so an idle worker sends nothing.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from codetether_contract.models import MessageSummary, SessionInfo
from codetether_worker.storage_layout import MESSAGES_DIR, SESSIONS_DIR

log = logging.getLogger(__name__)

SUMMARY_CHARS = 500
MAX_ITEMS_PER_SYNC = 10_000


@dataclass(frozen=True)
class SessionRecord:
    info: SessionInfo
    directory: str
    messages: tuple[MessageSummary, ...]
    fingerprint: tuple[Any, ...]


def _timestamp(value: Any) -> datetime | None:
    """Epoch milliseconds (the agent's format), epoch seconds, or ISO 8601."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        seconds = value / 1000 if value > 1e11 else value
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.debug("skipping unreadable agent record %s: %s", path, exc)
        return None
    return data if isinstance(data, dict) else None


def summarise_message(raw: dict[str, Any], fallback_id: str) -> MessageSummary | None:
    """One stored message -> its summary (bounded text) and tool-usage counts."""
    parts = raw.get("parts") if isinstance(raw.get("parts"), list) else []
    texts: list[str] = []
    tools: Counter[str] = Counter()
    for part in parts or []:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif part.get("type") == "tool" and isinstance(part.get("tool"), str) and part["tool"]:
            tools[part["tool"]] += 1
    summary = " ".join(" ".join(texts).split())
    if len(summary) > SUMMARY_CHARS:
        summary = summary[: SUMMARY_CHARS - 1] + "…"
    try:
        return MessageSummary(
            id=str(raw.get("id") or fallback_id),
            role=str(raw.get("role") or "assistant"),
            created_at=_timestamp(raw.get("created")),
            summary=summary,
            tool_usage=dict(tools),
        )
    except ValueError as exc:
        log.debug("skipping malformed agent message %s: %s", fallback_id, exc)
        return None


def read_session(storage: Path, session_path: Path) -> SessionRecord | None:
    raw = _read_json(session_path)
    if raw is None:
        return None
    session_id = str(raw.get("id") or session_path.stem)
    messages: list[MessageSummary] = []
    folder = storage / MESSAGES_DIR / session_id
    message_files = sorted(folder.glob("*.json")) if folder.is_dir() else []
    fingerprint: list[Any] = [raw.get("updated"), session_path.stat().st_mtime_ns]
    for path in message_files:
        data = _read_json(path)
        if data is None:
            continue
        summary = summarise_message(data, path.stem)
        if summary is not None:
            messages.append(summary)
            fingerprint.append((path.name, path.stat().st_mtime_ns))
    messages.sort(key=lambda m: (m.created_at or datetime.min.replace(tzinfo=UTC), m.id))
    tool_totals: Counter[str] = Counter()
    for message in messages:
        tool_totals.update(message.tool_usage)
    try:
        info = SessionInfo(
            id=session_id,
            title=str(raw.get("title") or "")[:1000],
            created_at=_timestamp(raw.get("created")),
            updated_at=_timestamp(raw.get("updated")),
            agent_type=str(raw["agent"])[:100] if raw.get("agent") else None,
            task_id=str(raw["task_id"]) if raw.get("task_id") else None,
            message_count=len(messages),
            metadata={
                key: value
                for key, value in {"model": raw.get("model"), "tool_usage": dict(tool_totals)}.items()
                if value
            },
        )
    except ValueError as exc:
        log.debug("skipping malformed agent session %s: %s", session_path, exc)
        return None
    return SessionRecord(
        info=info,
        directory=str(raw.get("directory") or ""),
        messages=tuple(messages[-MAX_ITEMS_PER_SYNC:]),
        fingerprint=tuple(fingerprint),
    )


def read_sessions(storage: Path) -> list[SessionRecord]:
    folder = storage / SESSIONS_DIR
    if not folder.is_dir():
        return []
    records: list[SessionRecord] = []
    for path in sorted(folder.glob("*.json")):
        try:
            record = read_session(storage, path)
        except OSError as exc:  # removed or rewritten while we read: next sync sees it
            log.debug("skipping agent session %s: %s", path, exc)
            continue
        if record is not None:
            records.append(record)
    return records


def codebase_for(directory: str, codebase_paths: dict[str, str]) -> str | None:
    """The codebase id whose path holds ``directory`` (the deepest one when nested)."""
    if not directory:
        return None
    target = Path(directory)
    best: tuple[int, str] | None = None
    for codebase_id, path in codebase_paths.items():
        root = Path(path)
        if (target == root or root in target.parents) and (best is None or len(root.parts) > best[0]):
            best = (len(root.parts), codebase_id)
    return best[1] if best else None


@dataclass(frozen=True)
class CodebaseSync:
    """What to send for one codebase: every session's metadata, messages of the changed ones."""

    codebase_id: str
    sessions: list[SessionInfo]
    changed: list[SessionRecord]


class SessionSyncer:
    """Remembers what was sent, so each sync only carries what changed."""

    def __init__(self, storage: Path) -> None:
        self.storage = storage
        self._sent: dict[tuple[str, str], tuple[Any, ...]] = {}

    def plan(self, codebase_paths: dict[str, str]) -> list[CodebaseSync]:
        grouped: dict[str, list[SessionRecord]] = {}
        for record in read_sessions(self.storage):
            codebase_id = codebase_for(record.directory, codebase_paths)
            if codebase_id is not None:
                grouped.setdefault(codebase_id, []).append(record)
        plans: list[CodebaseSync] = []
        for codebase_id, records in sorted(grouped.items()):
            changed = [r for r in records if self._sent.get((codebase_id, r.info.id)) != r.fingerprint]
            if changed:
                sessions = [r.info for r in records][-MAX_ITEMS_PER_SYNC:]
                plans.append(CodebaseSync(codebase_id, sessions, changed))
        return plans

    def mark_sent(self, codebase_id: str, records: Iterable[SessionRecord]) -> None:
        for record in records:
            self._sent[(codebase_id, record.info.id)] = record.fingerprint

    def forget(self) -> None:
        """After the server lost state (restart with in-memory storage), send everything again."""
        self._sent.clear()
