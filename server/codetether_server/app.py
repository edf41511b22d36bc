"""HTTP routes of the CodeTether-compatible server. Routes only: the logic is in service.py."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Body, Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from codetether_contract.models import (
    ClaimAnswer,
    ClaimRequest,
    CodebaseAnswer,
    CodebaseCreate,
    CodebaseList,
    ErrorAnswer,
    Health,
    HeartbeatRequest,
    MessageList,
    MessageSync,
    MessageSyncAnswer,
    ReleaseRequest,
    SessionList,
    SessionSync,
    SessionSyncAnswer,
    Success,
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
)
from codetether_server import __version__
from codetether_server.errors import ServiceError
from codetether_server.events import EventPublisher
from codetether_server.metrics import Metrics
from codetether_server.middleware import BodySizeLimit, RequestMetrics
from codetether_server.service import Service
from codetether_server.settings import Settings
from codetether_server.store import Store, make_store

log = logging.getLogger("codetether_server")

ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorAnswer} for code in (400, 401, 403, 404, 409, 413)
}


async def _service(request: Request) -> Service:
    # async on purpose: FastAPI runs plain-def dependencies in a thread pool, costing a thread hop.
    service: Service = request.app.state.service
    return service


ServiceDep = Annotated[Service, Depends(_service)]


_bearer = HTTPBearer(auto_error=False, description="A token of A2A_AUTH_TOKENS (when the server sets any)")


def bearer_auth(
    tokens: tuple[str, ...],
) -> Callable[[HTTPAuthorizationCredentials | None], Awaitable[None]]:
    encoded = [t.encode() for t in tokens]

    async def check(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
        if not encoded:
            return
        if credentials is None or not credentials.credentials.strip():
            raise HTTPException(401, "a bearer token is required", headers={"WWW-Authenticate": "Bearer"})
        offered = credentials.credentials.strip().encode()
        # Compare with every token so the time taken does not tell which one nearly matched.
        matched = False
        for candidate in encoded:
            matched |= hmac.compare_digest(offered, candidate)
        if not matched:
            raise HTTPException(403, "the bearer token is not accepted")

    return check


def create_app(settings: Settings, store: Store | None = None) -> FastAPI:
    """The ASGI application. ``store`` replaces the one ``settings`` choose (to embed the server)."""
    metrics = Metrics()
    storage = store if store is not None else make_store(settings)
    events = EventPublisher(settings.redis_url, settings.redis_prefix, metrics)
    service = Service(storage, settings, events, metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await storage.start()
        stop_sweeping = asyncio.Event()
        sweeper = asyncio.create_task(service.run_sweeper(stop_sweeping), name="lease-sweeper")
        log.info(
            "server started",
            extra={
                "storage": storage.kind,
                "events": events.enabled,
                "auth": bool(settings.auth_tokens),
                "lease_seconds": settings.lease_seconds,
            },
        )
        try:
            yield
        finally:
            stop_sweeping.set()
            try:
                await asyncio.wait_for(sweeper, timeout=10)
            except (TimeoutError, asyncio.CancelledError):
                log.warning("lease sweeper did not stop in time")
            await events.close()
            await storage.close()

    app = FastAPI(
        title="CodeTether-compatible server",
        version=__version__,
        description="Task server for CodeTether workers: workers, codebases, tasks with leases, sessions.",
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.settings = settings

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)

    async def _storage_unavailable(request: Request, exc: Exception) -> JSONResponse:
        log.warning("storage unavailable", extra={"path": request.url.path, "error": repr(exc)})
        return JSONResponse(
            {"detail": f"storage ({storage.kind}) unavailable: {exc.__class__.__name__}"},
            status_code=503,
            headers={"Retry-After": "1"},
        )

    for error_type in storage.unavailable_errors:
        app.add_exception_handler(error_type, _storage_unavailable)

    @app.get("/healthz", response_model=Health, tags=["health"])
    async def healthz() -> Health:
        return Health(status="ok", storage=storage.kind)

    @app.get("/readyz", response_model=Health, tags=["health"], responses={503: {"model": Health}})
    async def readyz() -> Response:
        try:
            await asyncio.wait_for(storage.ping(), timeout=5)
        except Exception as exc:
            body = Health(status="unavailable", storage=storage.kind, detail=repr(exc))
            return JSONResponse(body.model_dump(), status_code=503)
        return JSONResponse(Health(status="ok", storage=storage.kind).model_dump())

    @app.get("/metrics", tags=["health"], response_class=Response)
    async def metrics_endpoint() -> Response:
        with contextlib.suppress(Exception):
            await service.refresh_gauges()
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    api = APIRouter(dependencies=[Depends(bearer_auth(settings.auth_tokens))], responses=ERRORS)

    # ------------------------------------------------------------------ tasks
    # First: the router tries routes in order, and these are the busiest.

    @api.post("/v1/agent/tasks", response_model=Task, tags=["tasks"])
    async def create_task(body: TaskCreate, service: ServiceDep) -> Task:
        return await service.create_task(body)

    @api.get("/v1/agent/tasks", response_model=TaskList, tags=["tasks"])
    async def list_tasks(
        service: ServiceDep,
        status: TaskStatus | None = None,
        worker_id: str | None = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 500,
    ) -> TaskList:
        return TaskList(tasks=await service.list_tasks(status, worker_id, limit))

    @api.get("/v1/agent/tasks/{task_id}", response_model=Task, tags=["tasks"])
    async def get_task(task_id: str, service: ServiceDep) -> Task:
        return await service.get_task(task_id)

    @api.post("/v1/agent/tasks/{task_id}/cancel", response_model=Task, tags=["tasks"])
    async def cancel_task(task_id: str, service: ServiceDep) -> Task:
        """Cancel a pending or running task; its worker stops the agent. 409 when it already ended."""
        return await service.cancel_task(task_id)

    @api.put("/v1/agent/tasks/{task_id}/status", response_model=Task, tags=["tasks"])
    async def update_task_status(task_id: str, body: TaskStatusUpdate, service: ServiceDep) -> Task:
        return await service.update_status(task_id, body)

    @api.post("/v1/agent/tasks/{task_id}/output", response_model=Success, tags=["tasks"])
    async def append_output(task_id: str, body: TaskOutputChunk, service: ServiceDep) -> Success:
        await service.append_output(task_id, body.worker_id, body.output)
        return Success()

    @api.get("/v1/agent/tasks/{task_id}/output", response_model=TaskOutput, tags=["tasks"])
    async def get_output(task_id: str, service: ServiceDep) -> TaskOutput:
        return await service.get_output(task_id)

    @api.post("/v1/worker/tasks/claim", response_model=ClaimAnswer, tags=["tasks"])
    async def claim_task(
        body: ClaimRequest,
        service: ServiceDep,
        worker_id: Annotated[str, Header(alias="X-Worker-ID", min_length=1, max_length=253)],
    ) -> ClaimAnswer:
        return await service.claim(body.task_id, worker_id)

    @api.post("/v1/worker/tasks/release", response_model=Task, tags=["tasks"])
    async def release_task(
        body: ReleaseRequest,
        service: ServiceDep,
        worker_id: Annotated[str | None, Header(alias="X-Worker-ID", max_length=253)] = None,
    ) -> Task:
        return await service.release(body, worker_id)

    # ------------------------------------------------------------------ workers

    @api.post("/v1/agent/workers/register", response_model=WorkerAnswer, tags=["workers"])
    async def register_worker(body: WorkerRegistration, service: ServiceDep) -> WorkerAnswer:
        return WorkerAnswer(worker=await service.register_worker(body))

    @api.post("/v1/agent/workers/{worker_id}/heartbeat", response_model=Success, tags=["workers"])
    async def heartbeat(
        worker_id: str, service: ServiceDep, body: Annotated[HeartbeatRequest | None, Body()] = None
    ) -> Success:
        await service.heartbeat(worker_id, body or HeartbeatRequest())
        return Success()

    @api.post("/v1/agent/workers/{worker_id}/unregister", response_model=Success, tags=["workers"])
    async def unregister_worker(worker_id: str, service: ServiceDep) -> Success:
        await service.unregister_worker(worker_id)
        return Success()

    @api.get("/v1/agent/workers", response_model=WorkerList, tags=["workers"])
    async def list_workers(service: ServiceDep) -> WorkerList:
        return WorkerList(workers=await service.list_workers())

    @api.get("/v1/agent/workers/{worker_id}", response_model=Worker, tags=["workers"])
    async def get_worker(worker_id: str, service: ServiceDep) -> Worker:
        return await service.get_worker(worker_id)

    # ------------------------------------------------------------------ codebases

    @api.post("/v1/agent/codebases", response_model=CodebaseAnswer, tags=["codebases"])
    async def register_codebase(body: CodebaseCreate, service: ServiceDep) -> CodebaseAnswer:
        return CodebaseAnswer(codebase=await service.register_codebase(body))

    @api.get("/v1/agent/codebases", response_model=CodebaseList, tags=["codebases"])
    async def list_codebases(service: ServiceDep, worker_id: str | None = None) -> CodebaseList:
        return CodebaseList(codebases=await service.list_codebases(worker_id))

    @api.get("/v1/agent/codebases/{codebase_id}", response_model=CodebaseAnswer, tags=["codebases"])
    async def get_codebase(codebase_id: str, service: ServiceDep) -> CodebaseAnswer:
        return CodebaseAnswer(codebase=await service.get_codebase(codebase_id))

    @api.delete("/v1/agent/codebases/{codebase_id}", response_model=CodebaseAnswer, tags=["codebases"])
    async def delete_codebase(codebase_id: str, service: ServiceDep) -> CodebaseAnswer:
        return CodebaseAnswer(codebase=await service.delete_codebase(codebase_id))

    # ------------------------------------------------------------------ sessions

    @api.post(
        "/v1/agent/codebases/{codebase_id}/sessions/sync", response_model=SessionSyncAnswer, tags=["sessions"]
    )
    async def sync_sessions(codebase_id: str, body: SessionSync, service: ServiceDep) -> SessionSyncAnswer:
        return SessionSyncAnswer(sessions_count=await service.sync_sessions(codebase_id, body))

    @api.get("/v1/agent/codebases/{codebase_id}/sessions", response_model=SessionList, tags=["sessions"])
    async def list_sessions(codebase_id: str, service: ServiceDep) -> SessionList:
        return SessionList(sessions=await service.list_sessions(codebase_id))

    @api.post(
        "/v1/agent/codebases/{codebase_id}/sessions/{session_id}/messages/sync",
        response_model=MessageSyncAnswer,
        tags=["sessions"],
    )
    async def sync_messages(
        codebase_id: str, session_id: str, body: MessageSync, service: ServiceDep
    ) -> MessageSyncAnswer:
        return MessageSyncAnswer(messages_count=await service.sync_messages(codebase_id, session_id, body))

    @api.get(
        "/v1/agent/codebases/{codebase_id}/sessions/{session_id}/messages",
        response_model=MessageList,
        tags=["sessions"],
    )
    async def list_messages(codebase_id: str, session_id: str, service: ServiceDep) -> MessageList:
        return MessageList(messages=await service.list_messages(codebase_id, session_id))

    app.include_router(api)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestMetrics, metrics=metrics)
    return app


__all__ = ["create_app"]
