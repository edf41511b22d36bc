"""What the handlers share in one operator process: the API facade, server clients, placements."""

from __future__ import annotations

import asyncio
import base64
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from codetether_contract import CodetetherClient
from codetether_operator import metrics
from codetether_operator.kube import Kube
from codetether_operator.models import CodebasePhase, PoolPhase, SecretKeyRef
from codetether_operator.settings import OperatorSettings


class TokenUnavailable(Exception):
    """The Secret holding the server token, or its key, is missing."""


class ServerClients:
    """One long-lived client per (server URL, token): connection pools are reused across handlers."""

    def __init__(self, kube: Kube, settings: OperatorSettings) -> None:
        self._kube = kube
        self._settings = settings
        self._clients: dict[tuple[str, str | None], CodetetherClient] = {}

    def url_for(self, spec_url: str) -> str:
        return self._settings.server_url_override or spec_url

    async def token(self, namespace: str, ref: SecretKeyRef | None) -> str | None:
        if ref is None:
            return None
        secret = await self._kube.get_secret(namespace, ref.name)
        if secret is None:
            raise TokenUnavailable(f"Secret {ref.name!r} does not exist")
        data = secret.get("data") or {}
        if ref.key not in data:
            raise TokenUnavailable(f"Secret {ref.name!r} has no key {ref.key!r}")
        return base64.b64decode(data[ref.key]).decode().strip()

    async def client(self, namespace: str, spec_url: str, ref: SecretKeyRef | None) -> CodetetherClient:
        url = self.url_for(spec_url)
        token = await self.token(namespace, ref)
        key = (url, token)
        client = self._clients.get(key)
        if client is None:
            client = CodetetherClient(
                url, token=token, timeout=self._settings.server_timeout_seconds, retries=1
            )
            self._clients[key] = client
        return client

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        await asyncio.gather(*(c.aclose() for c in clients), return_exceptions=True)


class Placements:
    """Which pod each spread codebase went to, as this process decided it.

    kopf's index of Codebase statuses is the durable view (filled before handlers start); decisions
    made here are visible at once, before their status write comes back through the watch, so
    codebases created together still spread evenly.
    """

    def __init__(self) -> None:
        self._local: dict[tuple[str, str], tuple[str, str]] = {}  # (ns, codebase) -> (pool, pod)

    def counts(self, namespace: str, pool: str, indexed: Iterable[tuple[str, str]]) -> dict[str, int]:
        merged = dict(indexed)
        for (ns, name), (pool_name, pod) in self._local.items():
            if ns == namespace and pool_name == pool:
                merged[name] = pod
        counts: dict[str, int] = defaultdict(int)
        for pod in merged.values():
            counts[pod] += 1
        return dict(counts)

    def record(self, namespace: str, name: str, pool: str, pod: str) -> None:
        self._local[(namespace, name)] = (pool, pod)

    def get(self, namespace: str, name: str) -> tuple[str, str] | None:
        """(pool, pod) this process last placed the codebase on."""
        return self._local.get((namespace, name))

    def forget(self, namespace: str, name: str) -> None:
        self._local.pop((namespace, name), None)


@dataclass
class Runtime:
    settings: OperatorSettings
    kube: Kube
    clients: ServerClients
    placements: Placements = field(default_factory=Placements)
    pool_phases: metrics.PhaseTracker = field(
        default_factory=lambda: metrics.PhaseTracker(metrics.POOLS, [p.value for p in PoolPhase])
    )
    codebase_phases: metrics.PhaseTracker = field(
        default_factory=lambda: metrics.PhaseTracker(metrics.CODEBASES, [p.value for p in CodebasePhase])
    )
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    # (namespace, codebase) -> the last wake token sent to it (see handlers.common.wake_codebases).
    wakes: dict[tuple[str, str], str] = field(default_factory=dict)

    @classmethod
    def create(cls, settings: OperatorSettings, kube: Kube) -> Runtime:
        return cls(settings=settings, kube=kube, clients=ServerClients(kube, settings))

    def lock(self, uid: str) -> asyncio.Lock:
        """Change handlers and timers of one object never run their reconcile at the same time."""
        return self._locks.setdefault(uid, asyncio.Lock())

    def drop_lock(self, uid: str) -> None:
        self._locks.pop(uid, None)

    async def aclose(self) -> None:
        await self.clients.aclose()
        self.kube.close()
