"""Small pieces both handlers use."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from codetether_contract import (
    ApiError,
    ForbiddenError,
    ServerUnavailableError,
    UnauthorizedError,
)
from codetether_operator import metrics
from codetether_operator.plan import SERVER_REJECTED, SERVER_UNREACHABLE, Event
from codetether_operator.runtime import TokenUnavailable


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
