"""Small pieces both handlers use."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from codetether_contract import (
    ApiError,
    ForbiddenError,
    ServerUnavailableError,
    UnauthorizedError,
)
from codetether_operator import metrics
from codetether_operator.kube import KubeError, Unreachable
from codetether_operator.plan import SERVER_REJECTED, SERVER_UNREACHABLE, WAKE_ANNOTATION, Event
from codetether_operator.runtime import Runtime, TokenUnavailable


def now() -> datetime:
    return datetime.now(UTC)


def server_error(exc: BaseException, operation: str) -> tuple[str, str]:
    """(reason, message) for a failed server call, counted in the metrics."""
    metrics.SERVER_ERRORS.labels(operation=operation, error=type(exc).__name__).inc()
    if isinstance(exc, ServerUnavailableError):
        return SERVER_UNREACHABLE, "no answer (connection refused or timed out)"
    if isinstance(exc, UnauthorizedError | ForbiddenError):
        return SERVER_REJECTED, f"{exc.status_code}: check spec.server.authSecretRef ({exc.detail})"
    if isinstance(exc, ApiError):
        return SERVER_REJECTED, f"{exc.status_code}: {exc.detail}"
    if isinstance(exc, TokenUnavailable):
        return SERVER_REJECTED, str(exc)
    return SERVER_UNREACHABLE, repr(exc)


SERVER_ERRORS = (ServerUnavailableError, ApiError, TokenUnavailable)


def post_events(body: Any, events: list[Event]) -> None:
    import kopf

    for event in events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message[:1000])


def plain(obj: Any) -> dict[str, Any]:
    """A kopf body/spec/status view as a plain dict."""
    return dict(obj) if obj is not None else {}


logger = logging.getLogger(__name__)


async def wake_codebases(rt: Runtime, namespace: str, names: list[str], token: str) -> None:
    """Have these Codebases reconciled now, once per token (resyncs that plan the same wake send
    nothing). A failure only delays them to their next resync."""
    for name in names:
        if rt.wakes.get((namespace, name)) == token:
            continue
        try:
            await rt.kube.annotate_codebase(namespace, name, {WAKE_ANNOTATION: token})
            rt.wakes[(namespace, name)] = token
        except (KubeError, Unreachable) as exc:
            logger.warning("could not wake Codebase %s/%s: %s", namespace, name, exc)
