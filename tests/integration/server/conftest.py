"""The server under test, in-process (ASGI) on each storage backend, against real Redis and PostgreSQL."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import httpx
import pytest
import redis.asyncio as aioredis
from fastapi import FastAPI

from codetether_contract.client import CodetetherClient
from codetether_contract.models import CodebaseCreate, WorkerRegistration
from codetether_server.app import create_app
from codetether_server.settings import Settings

BACKENDS = ("memory", "redis", "postgres")


@dataclass
class Api:
    """One running server: the contract client, a raw HTTP client, and the app."""

    client: CodetetherClient
    http: httpx.AsyncClient
    app: FastAPI
    settings: Settings

    async def worker(self, worker_id: str, **fields: object) -> None:
        await self.client.register_worker(WorkerRegistration(worker_id=worker_id, **fields))  # type: ignore[arg-type]

    async def codebase(self, name: str, worker_id: str | None = None, codebase_id: str | None = None) -> str:
        body = CodebaseCreate(
            name=name, path=f"/codebases/{name}", worker_id=worker_id, codebase_id=codebase_id
        )
        return (await self.client.register_codebase(body)).id


Serve = Callable[..., Awaitable[Api]]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def server_env(
    backend: str, request: pytest.FixtureRequest, redis_base_url: str, redis_prefix: str
) -> dict[str, str]:
    """Environment of a server on ``backend``; Redis always set, so events are published on every backend."""
    env = {
        "A2A_STORAGE": backend,
        "A2A_REDIS_URL": redis_base_url,
        "A2A_REDIS_PREFIX": redis_prefix,
        "A2A_LEASE_SWEEP_INTERVAL": "0.2",
        "A2A_DB_POOL_SIZE": "20",
    }
    if backend == "postgres":
        env["DATABASE_URL"] = request.getfixturevalue("database_url")
    return env


@pytest.fixture
async def serve(server_env: dict[str, str], redis_base_url: str, redis_prefix: str) -> AsyncIterator[Serve]:
    """``await serve(**env)`` starts one in-process server (lifespan included) with extra settings."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(**overrides: str) -> Api:
            settings = Settings.from_env({**server_env, **overrides})
            app = create_app(settings)
            await stack.enter_async_context(app.router.lifespan_context(app))
            transport = httpx.ASGITransport(app=app)
            client = CodetetherClient("http://server.test", transport=transport, retries=0)
            stack.push_async_callback(client.aclose)
            http = httpx.AsyncClient(base_url="http://server.test", transport=transport)
            stack.push_async_callback(http.aclose)
            return Api(client=client, http=http, app=app, settings=settings)

        yield start
    redis = aioredis.Redis.from_url(redis_base_url)
    try:
        keys = [key async for key in redis.scan_iter(match=f"{redis_prefix}:*", count=1000)]
        if keys:
            await redis.delete(*keys)
    finally:
        await redis.aclose()


@pytest.fixture
async def api(serve: Serve) -> Api:
    return await serve()
