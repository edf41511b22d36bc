"""Redis going away: requests keep working when only events are lost; /readyz tells when storage is gone."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from codetether_contract.client import CodetetherClient
from codetether_contract.models import TaskCreate
from codetether_server.app import create_app
from codetether_server.settings import Settings
from tests.integration.server.conftest import Api
from tests.support.services import RedisServer


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Api]:
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        CodetetherClient("http://server.test", transport=transport, retries=0) as client,
        httpx.AsyncClient(base_url="http://server.test", transport=transport) as http,
    ):
        yield Api(client=client, http=http, app=app, settings=settings)


async def test_requests_succeed_while_redis_for_events_is_down(own_redis: RedisServer) -> None:
    settings = Settings.from_env({"A2A_STORAGE": "memory", "A2A_REDIS_URL": own_redis.url})
    async with running(settings) as api:
        await api.worker("w1")
        codebase = await api.codebase("c", worker_id="w1")
        await api.client.create_task(TaskCreate(title="t", prompt="p", codebase_id=codebase))
        own_redis.stop()
        await api.client.create_task(TaskCreate(title="t", prompt="p", codebase_id=codebase))
        task = await api.client.create_task(TaskCreate(title="t", prompt="p", codebase_id=codebase))
        assert (await api.client.claim_task(task.id, "w1")).task.worker_id == "w1"
        assert (await api.http.get("/readyz")).status_code == 200  # storage is memory: still ready
        metrics = (await api.http.get("/metrics")).text
        assert 'codetether_server_events_total{outcome="dropped"} 2.0' in metrics
        assert 'codetether_server_events_total{outcome="published"} 2.0' in metrics


async def test_readyz_follows_the_storage(own_redis: RedisServer) -> None:
    settings = Settings.from_env({"A2A_STORAGE": "redis", "A2A_REDIS_URL": own_redis.url})
    async with running(settings) as api:
        assert (await api.http.get("/readyz")).status_code == 200
        own_redis.stop()
        answer = await api.http.get("/readyz")
        assert answer.status_code == 503
        assert answer.json()["status"] == "unavailable"
        assert (await api.http.get("/healthz")).status_code == 200
        refused = await api.http.post("/v1/agent/workers/register", json={"worker_id": "w1"})
        assert (refused.status_code, refused.headers["retry-after"]) == (503, "1")
        assert refused.json()["detail"].startswith("storage (redis) unavailable")
        own_redis.start()
        assert (await api.http.get("/readyz")).status_code == 200
        await api.worker("w1")  # and the store works again


async def test_postgres_restart_answers_503_then_recovers() -> None:
    from tests.integration.server.helpers import eventually
    from tests.support.services import PostgresServer, create_database

    postgres = PostgresServer().start()
    try:
        url = create_database(postgres.url, "outage")
        settings = Settings.from_env({"DATABASE_URL": url, "A2A_DB_POOL_SIZE": "3"})
        async with running(settings) as api:
            await api.worker("w1")
            postgres.stop()
            down = await api.http.get("/v1/agent/workers")
            assert (down.status_code, down.headers["retry-after"]) == (503, "1")
            assert (await api.http.get("/readyz")).status_code == 503
            postgres.start()

            async def served() -> bool:
                return (await api.http.get("/v1/agent/workers")).status_code == 200

            await eventually(served)
            assert [w.id for w in await api.client.list_workers()] == ["w1"]
            assert (await api.http.get("/readyz")).status_code == 200
    finally:
        postgres.destroy()
