"""Arbitrary JSON thrown at every endpoint: an answer from the contract (2xx/400/404/409/422), never a 500."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codetether_server.app import create_app
from codetether_server.settings import Settings

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)

FIELDS = [
    "worker_id",
    "name",
    "path",
    "codebase_id",
    "title",
    "prompt",
    "priority",
    "metadata",
    "status",
    "task_id",
    "output",
    "sessions",
    "messages",
    "capabilities",
    "result",
    "error",
    "agent_type",
]
bodies = st.one_of(
    json_values,
    st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=8),
)

ENDPOINTS = [
    ("POST", "/v1/agent/workers/register"),
    ("POST", "/v1/agent/workers/w1/heartbeat"),
    ("POST", "/v1/agent/codebases"),
    ("POST", "/v1/agent/tasks"),
    ("POST", "/v1/worker/tasks/claim"),
    ("POST", "/v1/worker/tasks/release"),
    ("PUT", "/v1/agent/tasks/t1/status"),
    ("POST", "/v1/agent/tasks/t1/output"),
    ("POST", "/v1/agent/codebases/c1/sessions/sync"),
    ("POST", "/v1/agent/codebases/c1/sessions/s1/messages/sync"),
]


class Http:
    """A synchronous face of an in-process server, so hypothesis can drive it example by example."""

    def __init__(self, runner: asyncio.Runner, client: httpx.AsyncClient) -> None:
        self.runner = runner
        self.client = client

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.runner.run(self.client.request(method, path, **kwargs))


@pytest.fixture(scope="module")
def http() -> Iterator[Http]:
    app = create_app(Settings.from_env({"A2A_STORAGE": "memory"}))
    with asyncio.Runner() as runner:
        lifespan = app.router.lifespan_context(app)
        runner.run(lifespan.__aenter__())
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://server.test")
        http = Http(runner, client)
        try:
            http.request("POST", "/v1/agent/workers/register", json={"worker_id": "w1"})
            http.request("POST", "/v1/agent/codebases", json={"name": "c", "path": "/c", "codebase_id": "c1"})
            yield http
        finally:
            runner.run(client.aclose())
            runner.run(lifespan.__aexit__(None, None, None))


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies)
def test_any_body_gets_a_contract_answer(http: Http, method: str, path: str, body: Any) -> None:
    response = http.request(method, path, json=body, headers={"X-Worker-ID": "w1"})
    assert response.status_code in (200, 400, 404, 409, 422), response.text
    detail = response.json() if response.status_code >= 400 else None
    if detail is not None:
        assert "detail" in detail
    if response.status_code == 422:
        assert all(error["loc"] for error in detail["detail"])
