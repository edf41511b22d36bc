"""Wire models of the CodeTether worker API: every request and answer body, in one place.

Field names are the ones the CodeTether "Distributed Workers" documentation uses (``worker_id``,
``codebase_id``, ``"global"``, ...). Upstream later renamed *codebase* to *workspace*; the
``workspace``-named spellings are accepted on input as aliases and never emitted.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator

GLOBAL_CODEBASE = "global"
"""The codebase id a task uses to go to any worker that registered a global codebase."""

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$"
"""Worker and codebase ids travel in URL paths and Redis channel names: no slashes, no spaces."""

MAX_PROMPT_CHARS = 200_000
MAX_TITLE_CHARS = 500
MAX_OUTPUT_CHUNK_CHARS = 1_000_000
MAX_RESULT_CHARS = 1_000_000

_ID_RE = re.compile(ID_PATTERN)

WorkerId = Annotated[str, Field(pattern=ID_PATTERN, description="Unique worker identifier")]


def utcnow() -> datetime:
    return datetime.now(UTC)


def global_codebase_id(worker_id: str) -> str:
    """Server-side id of the global codebase a worker registered."""
    return f"global-{worker_id}"


class _Model(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")


class _Request(BaseModel):
    # Unknown fields in requests are ignored (older and newer workers send more or less),
    # but the known ones are validated strictly enough to name the bad field.
    model_config = ConfigDict(populate_by_name=True, extra="ignore", str_strip_whitespace=True)


# --------------------------------------------------------------------------- enums


class TaskStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)


FINAL_TASK_STATUSES = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})


class WorkerStatus(StrEnum):
    ACTIVE = "active"  # heartbeating, idle or working below its limit
    BUSY = "busy"  # heartbeating, at its concurrency limit
    DRAINING = "draining"  # shutting down: claims nothing new
    OFFLINE = "offline"  # no heartbeat for longer than the server's offline threshold


# --------------------------------------------------------------------------- workers


class WorkerRegistration(_Request):
    """``POST /v1/agent/workers/register``. Re-registering is an idempotent upsert."""

    worker_id: WorkerId
    name: str = Field(default="", max_length=253, description="Display name; defaults to worker_id")
    capabilities: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(
        default_factory=lambda: ["agent", "build", "deploy"], max_length=100
    )
    hostname: str = Field(default="", max_length=253)
    codebases: list[str] = Field(
        default_factory=list,
        max_length=1000,
        description="Names or ids of the codebases the worker serves (informational)",
        validation_alias=AliasChoices("codebases", "workspaces"),
    )
    global_codebase_id: str | None = Field(
        default=None,
        description="Set when the worker serves global tasks",
        validation_alias=AliasChoices("global_codebase_id", "global_workspace_id"),
    )
    max_concurrent_tasks: int = Field(default=1, ge=1, le=1000)
    version: str = Field(default="", max_length=100)


class HeartbeatRequest(_Request):
    """``POST /v1/agent/workers/{id}/heartbeat``; every field optional."""

    status: WorkerStatus | None = None
    active_tasks: int | None = Field(default=None, ge=0)


class Worker(_Model):
    """A worker as the server sees it; the seed's monitoring shape plus detail."""

    id: str
    name: str
    status: WorkerStatus
    last_heartbeat: datetime
    codebases: int = Field(description="How many codebases are registered for this worker")
    tasks_completed: int = 0
    hostname: str = ""
    capabilities: list[str] = Field(default_factory=list)
    codebase_ids: list[str] = Field(default_factory=list)
    global_codebase_id: str | None = None
    active_tasks: int = 0
    max_concurrent_tasks: int = 1
    registered_at: datetime
    version: str = ""


class WorkerAnswer(_Model):
    success: bool = True
    worker: Worker


class WorkerList(_Model):
    workers: list[Worker]


class Success(_Model):
    success: bool = True


# --------------------------------------------------------------------------- codebases


class CodebaseCreate(_Request):
    """``POST /v1/agent/codebases``.

    ``codebase_id="global"`` (with ``worker_id``) registers that worker's global codebase. Any other
    ``codebase_id`` is a caller-chosen id: registering it again updates it (idempotent upsert).
    Without ``codebase_id`` a registration of the same name for the same worker is updated too.
    """

    name: str = Field(min_length=1, max_length=253)
    path: str = Field(min_length=1, max_length=4096)
    description: str = Field(default="", max_length=10_000)
    worker_id: str | None = Field(default=None, pattern=ID_PATTERN)
    codebase_id: str | None = Field(
        default=None,
        pattern=ID_PATTERN,
        validation_alias=AliasChoices("codebase_id", "workspace_id"),
    )
    git_url: str | None = Field(default=None, max_length=4096, description="Clone source for the path")
    git_ref: str | None = Field(default=None, max_length=253)

    @field_validator("path")
    @classmethod
    def _absolute_path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("path must be absolute")
        return value


class Codebase(_Model):
    id: str
    name: str
    path: str
    description: str = ""
    worker_id: str | None = None
    is_global: bool = False
    git_url: str | None = None
    git_ref: str | None = None
    created_at: datetime
    updated_at: datetime


class CodebaseAnswer(_Model):
    success: bool = True
    codebase: Codebase


class CodebaseList(_Model):
    codebases: list[Codebase]


# --------------------------------------------------------------------------- tasks


class TaskCreate(_Request):
    """``POST /v1/agent/tasks``."""

    title: str = Field(min_length=1, max_length=MAX_TITLE_CHARS)
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    agent_type: str = Field(default="build", min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
    codebase_id: str = Field(
        default=GLOBAL_CODEBASE,
        pattern=ID_PATTERN,
        description='A registered codebase id, or "global"',
        validation_alias=AliasChoices("codebase_id", "workspace_id"),
    )
    priority: int = Field(default=0, ge=-1000, le=1000, description="Higher runs first")
    metadata: dict[str, Any] = Field(default_factory=dict)
    model: str | None = Field(default=None, max_length=200)
    max_attempts: int | None = Field(default=None, ge=1, le=100)

    @field_validator("metadata")
    @classmethod
    def _required_capabilities_shape(cls, value: dict[str, Any]) -> dict[str, Any]:
        caps = value.get("required_capabilities")
        if caps is not None and (
            not isinstance(caps, list) or not all(isinstance(c, str) and c for c in caps)
        ):
            raise ValueError("metadata.required_capabilities must be a list of non-empty strings")
        return value


class Task(_Model):
    id: str
    title: str
    prompt: str
    agent_type: str = "build"
    codebase_id: str
    priority: int = 0
    metadata: dict[str, Any] = Field(default_factory=dict)
    model: str | None = None
    status: TaskStatus
    worker_id: str | None = None
    session_id: str | None = None
    result: str | None = None
    error: str | None = None
    attempts: int = Field(default=0, description="Runs that ended by lease expiry")
    max_attempts: int = 3
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    lease_expires_at: datetime | None = None

    @property
    def required_capabilities(self) -> list[str]:
        caps = self.metadata.get("required_capabilities") or []
        return [str(c) for c in caps]


class TaskList(_Model):
    tasks: list[Task]


class ClaimRequest(_Request):
    """``POST /v1/worker/tasks/claim`` with the ``X-Worker-ID`` header."""

    task_id: str = Field(min_length=1, max_length=253)


class ClaimAnswer(_Model):
    success: bool = True
    task: Task
    lease_expires_at: datetime


class TaskStatusUpdate(_Request):
    """``PUT /v1/agent/tasks/{id}/status``."""

    status: TaskStatus
    worker_id: str = Field(pattern=ID_PATTERN)
    session_id: str | None = Field(default=None, max_length=253)
    result: str | None = None
    error: str | None = None


class TaskOutputChunk(_Request):
    """``POST /v1/agent/tasks/{id}/output``: lines the agent printed, appended in order."""

    # Output is kept byte for byte: stripping would eat the newlines between chunks.
    model_config = ConfigDict(populate_by_name=True, extra="ignore", str_strip_whitespace=False)

    worker_id: str = Field(pattern=ID_PATTERN)
    output: str = Field(max_length=MAX_OUTPUT_CHUNK_CHARS)


class TaskOutput(_Model):
    task_id: str
    output: str
    truncated: bool = Field(default=False, description="True when older output was dropped")


class ReleaseRequest(_Request):
    """``POST /v1/worker/tasks/release``: end a claim.

    ``status="pending"`` hands the task back unfinished (the server requeues it at once and does
    not count an attempt); a final status records the outcome.
    """

    task_id: str = Field(min_length=1, max_length=253)
    status: TaskStatus
    worker_id: str | None = Field(default=None, pattern=ID_PATTERN)
    result: str | None = None
    error: str | None = None

    @field_validator("status")
    @classmethod
    def _not_running(cls, value: TaskStatus) -> TaskStatus:
        if value is TaskStatus.RUNNING:
            raise ValueError("a release ends a claim: status must be pending, completed, failed or cancelled")
        return value


# --------------------------------------------------------------------------- sessions


class SessionInfo(_Request):
    """Metadata of one agent session, as synced by a worker."""

    id: str = Field(min_length=1, max_length=253)
    title: str = Field(default="", max_length=1000)
    created_at: datetime | None = None
    updated_at: datetime | None = None
    agent_type: str | None = Field(default=None, max_length=100)
    task_id: str | None = Field(default=None, max_length=253)
    message_count: int = Field(default=0, ge=0)
    metadata: dict[str, Any] = Field(default_factory=dict)


class SessionSync(_Request):
    """``POST /v1/agent/codebases/{id}/sessions/sync``."""

    worker_id: str = Field(pattern=ID_PATTERN)
    sessions: list[SessionInfo] = Field(max_length=10_000)


class SessionSyncAnswer(_Model):
    success: bool = True
    sessions_count: int


class MessageSummary(_Request):
    """One message of a session: who, when, a bounded summary and the tools it used."""

    id: str = Field(min_length=1, max_length=253)
    role: str = Field(default="assistant", max_length=50)
    created_at: datetime | None = None
    summary: str = Field(default="", max_length=20_000)
    tool_usage: dict[str, int] = Field(default_factory=dict, description="tool name -> calls")


class MessageSync(_Request):
    """``POST /v1/agent/codebases/{id}/sessions/{sid}/messages/sync``."""

    worker_id: str = Field(pattern=ID_PATTERN)
    messages: list[MessageSummary] = Field(max_length=10_000)


class MessageSyncAnswer(_Model):
    success: bool = True
    messages_count: int


class Session(_Model):
    id: str
    codebase_id: str
    worker_id: str
    title: str = ""
    created_at: datetime | None = None
    updated_at: datetime | None = None
    agent_type: str | None = None
    task_id: str | None = None
    message_count: int = 0
    metadata: dict[str, Any] = Field(default_factory=dict)
    synced_at: datetime


class SessionList(_Model):
    sessions: list[Session]


class Message(_Model):
    id: str
    session_id: str
    role: str
    created_at: datetime | None = None
    summary: str = ""
    tool_usage: dict[str, int] = Field(default_factory=dict)


class MessageList(_Model):
    messages: list[Message]


class ErrorAnswer(_Model):
    detail: Any


class Health(_Model):
    status: Literal["ok", "unavailable"] = "ok"
    storage: str = ""
    detail: str | None = None


def is_valid_id(value: str) -> bool:
    return bool(_ID_RE.match(value))
