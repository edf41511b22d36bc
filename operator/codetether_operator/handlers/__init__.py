"""kopf handlers: observe -> plan -> apply -> status. ``register`` wires them into a registry."""

from __future__ import annotations

from typing import Any

from codetether_operator.handlers.codebase import CodebaseHandlers
from codetether_operator.handlers.pool import PoolHandlers
from codetether_operator.runtime import Runtime


def register(registry: Any, runtime: Runtime) -> None:
    import kopf

    kopf.on.login(registry=registry)(kopf.login_via_client)
    PoolHandlers(runtime).register(registry)
    CodebaseHandlers(runtime).register(registry)
