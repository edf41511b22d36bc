"""One async client for the CodeTether worker API.

Keep ONE long-lived client per process (it owns an httpx connection pool). Transport failures and
5xx/429 answers are retried with jittered exponential backoff; a call that is not safe to repeat
(creating a task, appending output) is only retried when the connection was never established.
4xx answers raise typed errors callers act on: ``NotFoundError`` (unknown worker -> re-register),
``ConflictError`` (task not claimable), ``BadRequestError`` ("No workers available"), ...
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
from pydantic import BaseModel

from codetether_contract.models import (
    ClaimAnswer,
    ClaimRequest,
    Codebase,
    CodebaseAnswer,
    CodebaseCreate,
    CodebaseList,
    HeartbeatRequest,
    Message,
    MessageList,
    MessageSummary,
    MessageSync,
    MessageSyncAnswer,
    ReleaseRequest,
    Session,
    SessionInfo,
    SessionList,
    SessionSync,
    SessionSyncAnswer,
    Task,
    TaskCreate,
    TaskList,
    TaskOutput,
    TaskOutputChunk,
    TaskStatus,
    TaskStatusUpdate,
    Worker,
    WorkerAnswer,
    WorkerList,
    WorkerRegistration,
    WorkerStatus,
)

M = TypeVar("M", bound=BaseModel)

WORKER_ID_HEADER = "X-Worker-ID"


class ApiError(Exception):
    """The server answered with an error status."""

    def __init__(self, status_code: int, detail: Any, method: str = "", url: str = "") -> None:
        self.status_code = status_code
        self.detail = detail
        self.method = method
        self.url = url
        super().__init__(f"{method} {url} -> {status_code}: {detail}")


class BadRequestError(ApiError):
    """400, e.g. ``No workers available`` when registering a codebase without a worker."""


class UnauthorizedError(ApiError):
    """401: the server wants a bearer token."""


class ForbiddenError(ApiError):
    """403: the bearer token was refused."""


class NotFoundError(ApiError):
    """404: unknown worker, codebase or task. A worker re-registers on this."""


class ConflictError(ApiError):
    """409: the task is taken, finished, or not eligible for this worker."""


class UnprocessableError(ApiError):
    """422: the body failed validation; ``detail`` names the field."""


class ServerUnavailableError(Exception):
    """No answer after every retry (connection refused, timeouts, 5xx, 429)."""


_ERRORS: dict[int, type[ApiError]] = {
    400: BadRequestError,
    401: UnauthorizedError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    422: UnprocessableError,
}


def _error_for(response: httpx.Response) -> ApiError:
    try:
        detail = response.json().get("detail", response.text)
    except (ValueError, AttributeError):
        detail = response.text
    cls = _ERRORS.get(response.status_code, ApiError)
    return cls(response.status_code, detail, response.request.method, str(response.request.url))


def backoff_delay(attempt: int, base: float = 0.2, cap: float = 5.0) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**attempt)]."""
    return random.uniform(0, min(cap, base * (2**attempt)))


class CodetetherClient:
    """Async client of the CodeTether worker API (the wire contract of ``codetether_contract``)."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout: float = 10.0,
        retries: int = 3,
        max_connections: int = 20,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Accept": "application/json", "User-Agent": "codetether-contract"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            transport=transport,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # ------------------------------------------------------------------ transport

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool = True,
    ) -> httpx.Response:
        """Send one request with retries; return the 2xx response or raise."""
        last_error: Exception | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(backoff_delay(attempt - 1))
            try:
                response = await self._http.request(method, path, json=json, params=params, headers=headers)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                last_error = exc  # never reached the server: always safe to repeat
                continue
            except httpx.TransportError as exc:
                last_error = exc
                if idempotent:
                    continue
                break
            if response.status_code == 429 or (response.status_code >= 500 and idempotent):
                last_error = _error_for(response)
                retry_after = response.headers.get("Retry-After", "")
                if retry_after.isdigit():
                    await asyncio.sleep(min(float(retry_after), 10.0))
                continue
            if response.status_code >= 400:
                raise _error_for(response)
            return response
        if isinstance(last_error, ApiError) and not idempotent:
            raise last_error
        raise ServerUnavailableError(f"{method} {self.base_url}{path}: {last_error!r}") from last_error

    async def _call(self, model: type[M], method: str, path: str, **kwargs: Any) -> M:
        response = await self.request(method, path, **kwargs)
        return model.model_validate(response.json())

    @staticmethod
    def _body(model: BaseModel) -> Any:
        return model.model_dump(mode="json", exclude_none=True)

    # ------------------------------------------------------------------ health

    async def health(self) -> bool:
        """True when the server answers ``/readyz`` with 2xx (no retries)."""
        try:
            response = await self._http.get("/readyz")
        except httpx.HTTPError:
            return False
        return response.is_success

    # ------------------------------------------------------------------ workers

    async def register_worker(self, registration: WorkerRegistration) -> Worker:
        answer = await self._call(
            WorkerAnswer, "POST", "/v1/agent/workers/register", json=self._body(registration)
        )
        return answer.worker

    async def heartbeat(
        self, worker_id: str, *, status: WorkerStatus | None = None, active_tasks: int | None = None
    ) -> None:
        body = HeartbeatRequest(status=status, active_tasks=active_tasks)
        await self.request("POST", f"/v1/agent/workers/{worker_id}/heartbeat", json=self._body(body))

    async def unregister_worker(self, worker_id: str) -> None:
        await self.request("POST", f"/v1/agent/workers/{worker_id}/unregister")

    async def list_workers(self) -> list[Worker]:
        return (await self._call(WorkerList, "GET", "/v1/agent/workers")).workers

    # ------------------------------------------------------------------ codebases

    async def register_codebase(self, codebase: CodebaseCreate) -> Codebase:
        answer = await self._call(CodebaseAnswer, "POST", "/v1/agent/codebases", json=self._body(codebase))
        return answer.codebase

    async def list_codebases(self, worker_id: str | None = None) -> list[Codebase]:
        params = {"worker_id": worker_id} if worker_id else None
        return (await self._call(CodebaseList, "GET", "/v1/agent/codebases", params=params)).codebases

    async def get_codebase(self, codebase_id: str) -> Codebase:
        return (await self._call(CodebaseAnswer, "GET", f"/v1/agent/codebases/{codebase_id}")).codebase

    async def delete_codebase(self, codebase_id: str) -> None:
        await self.request("DELETE", f"/v1/agent/codebases/{codebase_id}")

    # ------------------------------------------------------------------ tasks

    async def create_task(self, task: TaskCreate) -> Task:
        return await self._call(Task, "POST", "/v1/agent/tasks", json=self._body(task), idempotent=False)

    async def list_tasks(self, status: TaskStatus | None = None, worker_id: str | None = None) -> list[Task]:
        params: dict[str, str] = {}
        if status is not None:
            params["status"] = status.value
        if worker_id:
            params["worker_id"] = worker_id
        return (await self._call(TaskList, "GET", "/v1/agent/tasks", params=params)).tasks

    async def get_task(self, task_id: str) -> Task:
        return await self._call(Task, "GET", f"/v1/agent/tasks/{task_id}")

    async def cancel_task(self, task_id: str) -> Task:
        """Cancel a pending or running task (an administrator's call). 409 when it already ended
        (also when a retry follows a cancel whose answer was lost: the task is cancelled either way)."""
        return await self._call(Task, "POST", f"/v1/agent/tasks/{task_id}/cancel")

    async def claim_task(self, task_id: str, worker_id: str) -> ClaimAnswer:
        """Claim a pending task. Repeating a claim the same worker holds renews it (idempotent)."""
        return await self._call(
            ClaimAnswer,
            "POST",
            "/v1/worker/tasks/claim",
            json=self._body(ClaimRequest(task_id=task_id)),
            headers={WORKER_ID_HEADER: worker_id},
        )

    async def update_task_status(self, task_id: str, update: TaskStatusUpdate) -> Task:
        return await self._call(Task, "PUT", f"/v1/agent/tasks/{task_id}/status", json=self._body(update))

    async def append_output(self, task_id: str, worker_id: str, output: str) -> None:
        body = TaskOutputChunk(worker_id=worker_id, output=output)
        await self.request(
            "POST", f"/v1/agent/tasks/{task_id}/output", json=self._body(body), idempotent=False
        )

    async def get_output(self, task_id: str) -> TaskOutput:
        return await self._call(TaskOutput, "GET", f"/v1/agent/tasks/{task_id}/output")

    async def release_task(self, release: ReleaseRequest, worker_id: str) -> None:
        if release.worker_id is None:
            release = release.model_copy(update={"worker_id": worker_id})
        await self.request(
            "POST",
            "/v1/worker/tasks/release",
            json=self._body(release),
            headers={WORKER_ID_HEADER: worker_id},
        )

    # ------------------------------------------------------------------ sessions

    async def sync_sessions(self, codebase_id: str, worker_id: str, sessions: list[SessionInfo]) -> int:
        body = SessionSync(worker_id=worker_id, sessions=sessions)
        answer = await self._call(
            SessionSyncAnswer,
            "POST",
            f"/v1/agent/codebases/{codebase_id}/sessions/sync",
            json=self._body(body),
        )
        return answer.sessions_count

    async def sync_messages(
        self, codebase_id: str, session_id: str, worker_id: str, messages: list[MessageSummary]
    ) -> int:
        body = MessageSync(worker_id=worker_id, messages=messages)
        answer = await self._call(
            MessageSyncAnswer,
            "POST",
            f"/v1/agent/codebases/{codebase_id}/sessions/{session_id}/messages/sync",
            json=self._body(body),
        )
        return answer.messages_count

    async def list_sessions(self, codebase_id: str) -> list[Session]:
        return (await self._call(SessionList, "GET", f"/v1/agent/codebases/{codebase_id}/sessions")).sessions

    async def list_messages(self, codebase_id: str, session_id: str) -> list[Message]:
        path = f"/v1/agent/codebases/{codebase_id}/sessions/{session_id}/messages"
        return (await self._call(MessageList, "GET", path)).messages
