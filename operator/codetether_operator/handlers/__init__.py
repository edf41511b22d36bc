"""kopf handlers: observe -> plan -> apply -> status. ``register`` wires them into a registry."""

from __future__ import annotations

from typing import Any

from codetether_operator.handlers.codebase import CodebaseHandlers
from codetether_operator.handlers.pool import PoolHandlers
from codetether_operator.runtime import Runtime


def register(registry: Any, runtime: Runtime) -> None:
    import kopf

    from codetether_operator.kube import kopf_login

    kopf.on.login(registry=registry)(kopf_login)
    PoolHandlers(runtime).register(registry)
    CodebaseHandlers(runtime).register(registry)
