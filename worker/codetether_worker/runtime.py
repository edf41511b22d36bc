"""The worker's life: register, keep a heartbeat, claim and run tasks, sync sessions, drain on SIGTERM.

One ``CodetetherClient`` per process. Tasks come from ``delivery`` as candidate ids; the dispatcher
claims one whenever a slot is free (at most ``max_concurrent_tasks``) and runs it with ``executor``.

Shutdown (SIGTERM or SIGINT): the dispatcher and delivery stop at once, so nothing new is claimed.
Running tasks get ``drain_timeout`` seconds; heartbeats continue meanwhile so their leases hold.
What is still running then is killed and handed back (release with status ``pending``), the worker
unregisters and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import socket
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from codetether_contract.client import (
    ApiError,
    CodetetherClient,
    ConflictError,
    NotFoundError,
    ServerUnavailableError,
)
from codetether_contract.events import TaskEvent
from codetether_contract.models import (
    GLOBAL_CODEBASE,
    Codebase,
    CodebaseCreate,
    ReleaseRequest,
    Task,
    TaskStatus,
    TaskStatusUpdate,
    WorkerRegistration,
    WorkerStatus,
    global_codebase_id,
)
from codetether_worker import __version__
from codetether_worker.aio import wait_event
from codetether_worker.config import WorkerConfig
from codetether_worker.delivery import SERVER_PROBLEMS, CandidateQueue, Delivery
from codetether_worker.executor import AgentOutcome, AgentRun, run_agent
from codetether_worker.health import HealthServer, WorkerMetrics
from codetether_worker.sessions import SessionSyncer
from codetether_worker.storage_layout import STORAGE_ENV

log = logging.getLogger("codetether_worker")

SERVER_PROBLEMS_OR_TIMEOUT: tuple[type[Exception], ...] = (*SERVER_PROBLEMS, TimeoutError)
REPORT_RETRY_SECONDS = 300.0
"""How long a finished task's result is retried while the server is unreachable."""
CLONE_TIMEOUT_SECONDS = 900.0
HAND_BACK_SECONDS = 10.0


class TaskSetupError(Exception):
    """The task cannot start here (no codebase folder, clone failed); it fails with this message."""


class CodebaseFolders:
    """Makes sure each codebase folder exists, cloning its git source into it once."""

    def __init__(self) -> None:
        self._ready: dict[tuple[str, str | None], bool] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def prepare(self, codebase: Codebase) -> Path:
        key = (codebase.path, codebase.git_url)
        path = Path(codebase.path)
        if self._ready.get(key) and _is_dir(path):
            return path
        lock = self._locks.setdefault(codebase.path, asyncio.Lock())
        async with lock:
            if self._ready.get(key) and _is_dir(path):
                return path
            if codebase.git_url and not _is_git_checkout(path):
                if _has_files(path):
                    log.warning(
                        "codebase %s: %s is not empty and not a git checkout; not cloning %s",
                        codebase.id,
                        path,
                        codebase.git_url,
                    )
                else:
                    await self._clone(codebase, path)
            _make_dir(codebase.id, path)
            self._ready[key] = True
            return path

    async def _clone(self, codebase: Codebase, path: Path) -> None:
        argv = ["git", "clone", "--quiet"]
        if codebase.git_ref:
            argv += ["--branch", codebase.git_ref]
        argv += ["--", str(codebase.git_url), str(path)]
        log.info("codebase %s: cloning %s into %s", codebase.id, codebase.git_url, path)
        _make_dir(codebase.id, path.parent)
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env={"GIT_TERMINAL_PROMPT": "0", "PATH": "/usr/local/bin:/usr/bin:/bin"},
            )
        except OSError as exc:
            raise TaskSetupError(f"codebase {codebase.id}: cannot run git: {exc.strerror or exc}") from exc
        try:
            _, stderr = await asyncio.wait_for(process.communicate(), CLONE_TIMEOUT_SECONDS)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise TaskSetupError(f"codebase {codebase.id}: git clone timed out") from None
        except asyncio.CancelledError:
            process.kill()
            raise
        if process.returncode != 0:
            reason = stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
            raise TaskSetupError(f"codebase {codebase.id}: git clone {codebase.git_url} failed: {reason[0]}")


def _is_dir(path: Path) -> bool:
    return path.is_dir()


def _is_git_checkout(path: Path) -> bool:
    return (path / ".git").exists()


def _has_files(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


def _make_dir(codebase_id: str, path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TaskSetupError(f"codebase {codebase_id}: cannot create {path}: {exc.strerror}") from exc


class WorkerRuntime:
    def __init__(self, config: WorkerConfig, client: CodetetherClient | None = None) -> None:
        self.config = config
        self.worker_id = config.worker_name
        self.client = client or CodetetherClient(
            config.server_url,
            token=config.auth_token,
            max_connections=max(10, 2 * config.max_concurrent_tasks + 6),
        )
        self.metrics = WorkerMetrics()
        self.candidates = CandidateQueue()
        self.assigned: dict[str, Codebase] = {}  # pinned to us, and our global codebase
        self.shared: dict[str, Codebase] = {}  # codebases without a worker, learned on first task
        self.folders = CodebaseFolders()
        self.syncer = SessionSyncer(config.agent_storage)
        self.running: dict[str, asyncio.Task[None]] = {}
        self.registered = False
        self.server_ok = False
        self.stopping = asyncio.Event()
        self.exit_code = 0
        self._slots = asyncio.Semaphore(config.max_concurrent_tasks)
        self._heartbeat_now = asyncio.Event()
        self._codebases_changed = asyncio.Event()
        self._preparing: set[asyncio.Task[None]] = set()
        self._abandoned: dict[str, str] = {}  # running tasks no longer ours -> metrics label
        self._reporting: set[str] = set()  # running tasks whose agent ended: reporting the outcome
        self._checks: set[asyncio.Task[None]] = set()
        self._drain_now = asyncio.Event()  # a second SIGTERM/SIGINT: stop waiting for running tasks
        self.delivery = Delivery(
            self.client,
            self.worker_id,
            self.candidates,
            self.metrics,
            capabilities=frozenset(config.capabilities),
            poll_interval=config.poll_interval,
            redis_url=config.redis_url,
            redis_prefix=config.redis_prefix,
            serves_global=self.serves_global,
            on_codebase_event=self._on_codebase_event,
            is_running=lambda task_id: task_id in self.running,
            on_task_cancelled=self._on_task_cancelled,
        )
        self.delivery.set_server_observers(self._server_answered, self._server_failed_quietly)
        self.health: HealthServer | None = None

    # ------------------------------------------------------------------ state

    def serves_global(self) -> bool:
        return self.config.global_codebase is not None or any(cb.is_global for cb in self.assigned.values())

    def ready(self) -> tuple[bool, str]:
        if self.stopping.is_set():
            return False, "draining"
        if not self.registered:
            return False, "not registered with the server yet"
        if not self.server_ok:
            return False, "server unreachable"
        return True, f"registered as {self.worker_id}; delivery {self.delivery.mode}"

    def _server_answered(self) -> None:
        self.server_ok = True

    def _server_failed_quietly(self, exc: Exception) -> None:
        if isinstance(exc, ServerUnavailableError):
            self.server_ok = False

    def _server_failed(self, operation: str, exc: Exception) -> None:
        self.metrics.server_errors.labels(operation=operation).inc()
        self._server_failed_quietly(exc)

    # ------------------------------------------------------------------ registration

    def registration(self) -> WorkerRegistration:
        names = [spec.name for spec in self.config.codebases]
        return WorkerRegistration(
            worker_id=self.worker_id,
            name=self.worker_id,
            capabilities=list(self.config.capabilities),
            hostname=socket.gethostname(),
            codebases=names,
            global_codebase_id=global_codebase_id(self.worker_id) if self.config.global_codebase else None,
            max_concurrent_tasks=self.config.max_concurrent_tasks,
            version=__version__,
        )

    async def register(self) -> None:
        """Register (an idempotent upsert), then our configured codebases, then learn assigned ones."""
        await self.client.register_worker(self.registration())
        for spec in self.config.codebases:
            await self.client.register_codebase(
                CodebaseCreate(
                    name=spec.name, path=spec.path, description=spec.description, worker_id=self.worker_id
                )
            )
        if self.config.global_codebase is not None:
            spec = self.config.global_codebase
            await self.client.register_codebase(
                CodebaseCreate(
                    name=spec.name,
                    path=spec.path,
                    description=spec.description,
                    worker_id=self.worker_id,
                    codebase_id=GLOBAL_CODEBASE,
                )
            )
        self.registered = True
        self.server_ok = True
        self.syncer.forget()
        await self.refresh_codebases()
        log.info(
            "registered as %s at %s (codebases: %s%s)",
            self.worker_id,
            self.config.server_url,
            ", ".join(sorted(cb.name for cb in self.assigned.values() if not cb.is_global)) or "none",
            "; serves global tasks" if self.serves_global() else "",
        )

    async def register_until_done(self) -> bool:
        attempt = 0
        while not self.stopping.is_set():
            try:
                await self.register()
                return True
            except SERVER_PROBLEMS as exc:
                self._server_failed("register", exc)
                delay = min(10.0, 0.5 * 2**attempt) * random.uniform(0.5, 1.0)
                log.warning("registration failed (%s); retrying in %.1fs", exc, delay)
                attempt += 1
                await wait_event(self.stopping, delay)
        return False

    # ------------------------------------------------------------------ codebases

    def _on_codebase_event(self, event: TaskEvent) -> None:
        log.info("codebase event %s for %s", event.event.value, event.codebase_id)
        self._codebases_changed.set()

    async def refresh_codebases(self) -> None:
        """Learn the codebases the server assigns to us; prepare new folders (clone when needed)."""
        codebases = await self.client.list_codebases(worker_id=self.worker_id)
        fresh = {cb.id: cb for cb in codebases if cb.worker_id in (None, self.worker_id) or cb.is_global}
        for codebase_id in self.assigned.keys() - fresh.keys():
            log.info("codebase %s is no longer assigned to this worker", codebase_id)
        added = [cb for cid, cb in fresh.items() if self.assigned.get(cid) != cb]
        self.assigned = fresh
        self.shared.clear()  # codebases without a worker are looked up again on their next task
        for codebase in added:
            # In the background: a long clone must not hold up the heartbeat (and so the leases).
            # A task for this codebase waits for the same preparation (one lock per folder).
            preparing = asyncio.create_task(self._prepare(codebase), name=f"prepare-{codebase.id}")
            self._preparing.add(preparing)
            preparing.add_done_callback(self._preparing.discard)

    async def _prepare(self, codebase: Codebase) -> None:
        try:
            await self.folders.prepare(codebase)
            log.info("serving codebase %s (%s) at %s", codebase.id, codebase.name, codebase.path)
        except TaskSetupError as exc:
            log.error("%s", exc)

    async def _codebase_loop(self) -> None:
        while True:
            await self._codebases_changed.wait()
            self._codebases_changed.clear()
            try:
                await self.refresh_codebases()
                self.delivery.request_poll()
            except SERVER_PROBLEMS as exc:
                self._server_failed("codebases", exc)
                log.warning("refreshing codebases failed: %s", exc)

    async def codebase_for(self, task: Task) -> Codebase:
        if task.codebase_id == GLOBAL_CODEBASE:
            for codebase in self.assigned.values():
                if codebase.is_global:
                    return codebase
            raise TaskSetupError("this worker has no global codebase")
        known = self.assigned.get(task.codebase_id) or self.shared.get(task.codebase_id)
        if known is not None:
            return known
        try:
            codebase = await self.client.get_codebase(task.codebase_id)
        except NotFoundError:
            raise TaskSetupError(f"codebase {task.codebase_id} is not registered on the server") from None
        if codebase.worker_id == self.worker_id or codebase.is_global:
            self.assigned[codebase.id] = codebase
        else:
            self.shared[codebase.id] = codebase
        return codebase

    # ------------------------------------------------------------------ heartbeat

    def _worker_status(self) -> WorkerStatus:
        if self.stopping.is_set():
            return WorkerStatus.DRAINING
        if len(self.running) >= self.config.max_concurrent_tasks:
            return WorkerStatus.BUSY
        return WorkerStatus.ACTIVE

    async def heartbeat_once(self) -> None:
        try:
            await self.client.heartbeat(
                self.worker_id, status=self._worker_status(), active_tasks=len(self.running)
            )
            self.server_ok = True
        except NotFoundError:
            if self.stopping.is_set():
                return
            log.warning("the server does not know this worker (restarted?); registering again")
            await self.register()
            # Tasks we run were requeued or lost with the server's state; claiming again renews ours.
            for task_id in list(self.running):
                with contextlib.suppress(ApiError, ServerUnavailableError):
                    await self.client.claim_task(task_id, self.worker_id)
            self.delivery.request_poll()

    async def check_running_tasks(self) -> None:
        """Stop agents of tasks we no longer hold: cancelled by request, or our lease expired while we
        were cut off (or paused) and the task went back to the queue or to another worker. One run at
        a time, never two."""
        for task_id in list(self.running):
            await self.check_task(task_id)

    async def check_task(self, task_id: str) -> None:
        runner = self.running.get(task_id)
        if runner is None:
            return
        try:
            task = await self.client.get_task(task_id)
        except NotFoundError:
            reason, label = "the server no longer knows it", "abandoned"
        else:
            if task.worker_id == self.worker_id and (
                task.status is TaskStatus.RUNNING or (task.status.is_final and task_id in self._reporting)
            ):
                return  # still ours, or we are reporting it ourselves
            holder = f" on {task.worker_id}" if task.worker_id and task.worker_id != self.worker_id else ""
            reason = f"it is {task.status.value}{holder} now"
            label = "abandoned"
            if task.status is TaskStatus.CANCELLED and task.worker_id == self.worker_id:
                reason, label = f"it was {task.error or 'cancelled'}", "cancelled"
        if self.running.get(task_id) is runner and not runner.done():
            log.warning("task %s is no longer ours (%s); stopping its agent", task_id, reason)
            self._abandoned[task_id] = label
            runner.cancel()

    def _on_task_cancelled(self, task_id: str) -> None:
        self._check_soon(task_id, "task.cancelled event")

    def _check_soon(self, task_id: str, why: str) -> None:
        """Check one running task now rather than at the next heartbeat (same check, same outcome)."""
        if task_id not in self.running:
            return
        log.info("task %s: %s; checking it now", task_id, why)
        check = asyncio.create_task(self._check_after_event(task_id), name=f"check-{task_id}")
        self._checks.add(check)
        check.add_done_callback(self._checks.discard)

    async def _check_after_event(self, task_id: str) -> None:
        try:
            await self.check_task(task_id)
        except SERVER_PROBLEMS as exc:  # the heartbeat's lease check tries again
            self._server_failed("check", exc)
            log.warning("checking cancelled task %s failed: %s", task_id, exc)

    async def _heartbeat_loop(self) -> None:
        interval = self.config.heartbeat_interval
        next_beat = time.monotonic() + interval
        while True:
            # Woken early (status busy/active/draining changed, or the server forgot us): send just
            # the heartbeat; the checks below run once per interval.
            await wait_event(self._heartbeat_now, max(0.0, next_beat - time.monotonic()))
            self._heartbeat_now.clear()
            on_schedule = time.monotonic() >= next_beat
            if on_schedule:
                next_beat = time.monotonic() + interval
            try:
                await self.heartbeat_once()
                if on_schedule:
                    await self.check_running_tasks()
                    if not self.stopping.is_set():
                        await self.refresh_codebases()
            except SERVER_PROBLEMS as exc:
                self._server_failed("heartbeat", exc)
                log.warning("heartbeat failed: %s", exc)

    # ------------------------------------------------------------------ tasks

    async def _dispatch_loop(self) -> None:
        while True:
            await self._slots.acquire()
            started = False
            try:
                task_id = await self.candidates.get()
                if task_id in self.running:
                    continue
                started = await self._claim_and_start(task_id)
            finally:
                if not started:
                    self._slots.release()

    async def _claim_and_start(self, task_id: str) -> bool:
        try:
            answer = await self.client.claim_task(task_id, self.worker_id)
        except ConflictError:
            self.metrics.claim_conflicts.inc()
            return False
        except NotFoundError:
            # Unknown task (deleted) or unknown worker (server lost us): the heartbeat sorts out the latter.
            self._heartbeat_now.set()
            return False
        except SERVER_PROBLEMS as exc:
            self._server_failed("claim", exc)
            log.warning("claiming %s failed: %s", task_id, exc)
            return False
        self.server_ok = True
        self.metrics.tasks_claimed.inc()
        task = answer.task
        if self.stopping.is_set():  # the claim raced the stop signal: give it straight back
            await self._hand_back(task)
            return False
        log.info("claimed task %s (%s) for codebase %s", task.id, task.title, task.codebase_id)
        runner = asyncio.create_task(self._execute(task), name=f"task-{task.id}")
        self.running[task.id] = runner
        if len(self.running) == self.config.max_concurrent_tasks:
            self._heartbeat_now.set()  # active -> busy
        runner.add_done_callback(lambda _: self._task_done(task.id))
        return True

    def _task_done(self, task_id: str) -> None:
        self.running.pop(task_id, None)
        self._reporting.discard(task_id)
        self._slots.release()
        if len(self.running) == self.config.max_concurrent_tasks - 1:
            self._heartbeat_now.set()  # busy -> active: say so now, not at the next beat

    async def _execute(self, task: Task) -> None:
        self.metrics.active_tasks.inc()
        try:
            try:
                codebase = await self.codebase_for(task)
                folder = await self.folders.prepare(codebase)
            except TaskSetupError as exc:
                outcome = AgentOutcome(status=TaskStatus.FAILED, error=str(exc))
            except SERVER_PROBLEMS as exc:
                self._server_failed("codebases", exc)
                outcome = AgentOutcome(status=TaskStatus.FAILED, error=f"cannot look up codebase: {exc}")
            else:
                outcome = await self._run_agent(task, codebase, folder)
        except asyncio.CancelledError:
            if task.id in self._abandoned:  # not ours any more: nothing to hand back or report
                label = self._abandoned.pop(task.id)
                self.metrics.tasks_completed.labels(status=label).inc()
            else:
                await asyncio.shield(self._hand_back(task))
            raise
        except Exception as exc:  # a bug here must not strand the task until its lease expires
            log.exception("running task %s failed inside the worker", task.id)
            outcome = AgentOutcome(status=TaskStatus.FAILED, error=f"worker error: {exc!r}")
        finally:
            self.metrics.active_tasks.dec()
        self._reporting.add(task.id)
        await self._report(task, outcome)

    async def _run_agent(self, task: Task, codebase: Codebase, folder: Path) -> AgentOutcome:
        def started() -> None:
            latency = (datetime.now(UTC) - task.created_at).total_seconds()
            self.metrics.dispatch_latency.observe(max(0.0, latency))

        async def send_output(text: str) -> None:
            try:
                await self.client.append_output(task.id, self.worker_id, text)
            except ConflictError:
                # Not ours any more (cancelled, lease lost): output is dropped; check the task now.
                self._check_soon(task.id, "output refused")
            except SERVER_PROBLEMS as exc:
                self._server_failed("output", exc)
                raise

        run = AgentRun(
            agent_bin=self.config.agent_bin,
            agent_type=task.agent_type,
            prompt=task.prompt,
            cwd=folder,
            timeout=self.config.task_timeout,
            model=task.model,
            # Only an explicit request: a session an earlier attempt started may live on another machine.
            session_id=_text_or_none(task.metadata.get("session_id")),
            env={
                STORAGE_ENV: str(self.config.agent_storage),
                "CODETETHER_TASK_ID": task.id,
                "CODETETHER_WORKER_ID": self.worker_id,
                "CODETETHER_CODEBASE_ID": codebase.id,
            },
        )
        outcome = await run_agent(run, send_output=send_output, on_started=started)
        self.metrics.task_duration.observe(outcome.duration)
        return outcome

    async def _report(self, task: Task, outcome: AgentOutcome) -> None:
        update = TaskStatusUpdate(
            status=outcome.status,
            worker_id=self.worker_id,
            session_id=outcome.session_id,
            result=outcome.result,
            error=outcome.error,
        )
        deadline = time.monotonic() + REPORT_RETRY_SECONDS
        attempt = 0
        while True:
            try:
                await self.client.update_task_status(task.id, update)
                self.metrics.tasks_completed.labels(status=outcome.status.value).inc()
                log.info(
                    "task %s %s in %.2fs%s",
                    task.id,
                    outcome.status.value,
                    outcome.duration,
                    f": {outcome.error}" if outcome.error else "",
                )
                return
            except ConflictError as exc:
                if await self._was_cancelled(task.id):
                    # The server keeps the cancellation; our late outcome is dropped, quietly.
                    self.metrics.tasks_completed.labels(status="cancelled").inc()
                    log.info(
                        "task %s was cancelled by request; its %s outcome is dropped",
                        task.id,
                        outcome.status.value,
                    )
                else:
                    log.warning("task %s was no longer ours when reporting (%s)", task.id, exc.detail)
                return
            except NotFoundError as exc:
                log.warning("task %s unknown to the server when reporting (%s)", task.id, exc.detail)
                return
            except SERVER_PROBLEMS as exc:
                self._server_failed("report", exc)
                if time.monotonic() > deadline:
                    log.error("giving up reporting task %s: %s", task.id, exc)
                    return
                attempt += 1
                await asyncio.sleep(min(5.0, 0.25 * 2**attempt))

    async def _was_cancelled(self, task_id: str) -> bool:
        try:
            task = await self.client.get_task(task_id)
        except SERVER_PROBLEMS:
            return False
        return task.status is TaskStatus.CANCELLED and task.worker_id == self.worker_id

    async def _hand_back(self, task: Task) -> None:
        try:
            await asyncio.wait_for(
                self.client.release_task(
                    ReleaseRequest(task_id=task.id, status=TaskStatus.PENDING), self.worker_id
                ),
                HAND_BACK_SECONDS,
            )
            self.metrics.tasks_completed.labels(status="handed_back").inc()
            log.info("handed task %s back to the server", task.id)
        except SERVER_PROBLEMS_OR_TIMEOUT as exc:
            log.warning(
                "handing back task %s failed (%s); the server requeues it when its lease ends", task.id, exc
            )

    # ------------------------------------------------------------------ sessions

    async def sync_sessions_once(self) -> int:
        paths = {cb.id: cb.path for cb in (*self.assigned.values(), *self.shared.values())}
        sent = 0
        for plan in await asyncio.to_thread(self.syncer.plan, paths):
            await self.client.sync_sessions(plan.codebase_id, self.worker_id, plan.sessions)
            for record in plan.changed:
                await self.client.sync_messages(
                    plan.codebase_id, record.info.id, self.worker_id, list(record.messages)
                )
            self.syncer.mark_sent(plan.codebase_id, plan.changed)
            sent += len(plan.changed)
        return sent

    async def _session_loop(self) -> None:
        interval = self.config.session_sync_interval
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sync_sessions_once()
            except SERVER_PROBLEMS as exc:
                self._server_failed("session_sync", exc)
                log.warning("session sync failed: %s", exc)

    # ------------------------------------------------------------------ life

    def request_stop(self) -> None:
        if not self.stopping.is_set():
            log.info("stopping: no new claims; %d task(s) running", len(self.running))
            self.stopping.set()

    def _on_stop_signal(self) -> None:
        if not self.stopping.is_set():
            self.request_stop()
        elif not self._drain_now.is_set() and self.running:
            log.info("second stop signal: handing back running tasks now")
            self._drain_now.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal)
        try:
            if self.config.health_port:
                self.health = HealthServer(
                    self.config.health_host, self.config.health_port, self.ready, self.metrics
                )
                try:
                    await self.health.start()
                except OSError as exc:
                    # e.g. a second worker on one machine with the same config: it still works.
                    log.error(
                        "cannot listen on health port %d (%s): running without /healthz, /readyz, /metrics",
                        self.config.health_port,
                        exc.strerror,
                    )
                    self.health = None
            if not await self.register_until_done():
                return 0
            background = [
                asyncio.create_task(self._heartbeat_loop(), name="heartbeat"),
                asyncio.create_task(self._codebase_loop(), name="codebases"),
            ]
            if self.config.session_sync_interval > 0:
                background.append(asyncio.create_task(self._session_loop(), name="session-sync"))
            claiming = [
                asyncio.create_task(self.delivery.run(), name="delivery"),
                asyncio.create_task(self._dispatch_loop(), name="dispatch"),
            ]
            stop_wait = asyncio.create_task(self.stopping.wait())
            done, _ = await asyncio.wait(
                [stop_wait, *claiming, *background], return_when=asyncio.FIRST_COMPLETED
            )
            for finished in done - {stop_wait}:
                if finished.exception() is not None:  # a bug: say it, then drain like a SIGTERM
                    log.error("%s stopped unexpectedly", finished.get_name(), exc_info=finished.exception())
                    self.exit_code = 1
            self.request_stop()
            await _cancel(claiming)
            await self.drain()
            await _cancel([*background, stop_wait, *self._preparing, *self._checks])
            await self._final_sync()
            await self._unregister()
            return self.exit_code
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            if self.health:
                await self.health.stop()
            await self.client.aclose()

    async def drain(self) -> None:
        if not self.running:
            return
        self._heartbeat_now.set()  # tell the server we are draining
        log.info("draining: waiting up to %gs for %d task(s)", self.config.drain_timeout, len(self.running))
        late: set[asyncio.Task[None]] = set(self.running.values())
        deadline = time.monotonic() + self.config.drain_timeout
        while late and not self._drain_now.is_set() and time.monotonic() < deadline:
            interrupt = asyncio.create_task(self._drain_now.wait())
            finished, _ = await asyncio.wait(
                {*late, interrupt}, timeout=deadline - time.monotonic(), return_when=asyncio.FIRST_COMPLETED
            )
            interrupt.cancel()
            late -= finished
        if late:
            log.info("drain timeout: handing back %d task(s)", len(late))
            await _cancel(list(late))

    async def _final_sync(self) -> None:
        if self.config.session_sync_interval <= 0:
            return
        try:
            await asyncio.wait_for(self.sync_sessions_once(), 10.0)
        except SERVER_PROBLEMS_OR_TIMEOUT as exc:
            log.warning("final session sync failed: %s", exc)

    async def _unregister(self) -> None:
        try:
            await asyncio.wait_for(self.client.unregister_worker(self.worker_id), 10.0)
            log.info("unregistered %s", self.worker_id)
        except NotFoundError:
            pass
        except SERVER_PROBLEMS_OR_TIMEOUT as exc:
            log.warning("unregister failed: %s", exc)


def _text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


CANCEL_WAIT_SECONDS = 15.0


async def _cancel(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel and wait; bounded, so one stuck task cannot keep the worker from exiting."""
    pending = list(tasks)
    for task in pending:
        task.cancel()
    if not pending:
        return
    _, stuck = await asyncio.wait(pending, timeout=CANCEL_WAIT_SECONDS)
    for task in stuck:
        log.error("%s did not stop within %gs; going on without it", task.get_name(), CANCEL_WAIT_SECONDS)


async def run_worker(config: WorkerConfig) -> int:
    return await WorkerRuntime(config).run()
