"""Where an agent keeps its sessions, shared by the example agent (writer) and the session sync (reader).

Standard library only: the example agent imports this and must start fast.

Layout under the storage folder::

    sessions/<session_id>.json               {"id", "title", "directory", "agent", "model",
                                               "task_id", "created", "updated"}   (times: epoch ms)
    messages/<session_id>/<message_id>.json  {"id", "role", "created",
                                               "parts": [{"type": "text", "text": ...},
                                                         {"type": "tool", "tool": "write"}, ...]}
"""

from __future__ import annotations

import os
from pathlib import Path

STORAGE_ENV = "CODETETHER_STORAGE_DIR"
"""Set by the worker for every agent it starts, so agent and sync agree on the folder."""

SESSIONS_DIR = "sessions"
MESSAGES_DIR = "messages"


def default_agent_storage() -> Path:
    """``$CODETETHER_STORAGE_DIR``, else ``$XDG_DATA_HOME/codetether/storage`` (~/.local/share/...)."""
    explicit = os.environ.get(STORAGE_ENV)
    if explicit:
        return Path(explicit)
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "codetether" / "storage"


def session_file(storage: Path, session_id: str) -> Path:
    return storage / SESSIONS_DIR / f"{session_id}.json"


def messages_folder(storage: Path, session_id: str) -> Path:
    return storage / MESSAGES_DIR / session_id
