"""Fixtures for real services. Each test gets its own PostgreSQL database and Redis key prefix."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from tests.support.services import PostgresServer, RedisServer, create_database, drop_database


@pytest.fixture(scope="session")
def redis_base_url() -> Iterator[str]:
    """``REDIS_URL`` when given, else a throwaway redis-server for the whole run."""
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    server = RedisServer().start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_prefix() -> str:
    """A key and channel prefix unique to the test, so tests sharing one Redis never see each other."""
    return f"cttest-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    """``DATABASE_URL`` when given (databases are created beside it), else a throwaway cluster."""
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
        return
    server = PostgresServer().start()
    try:
        yield server.url
    finally:
        server.destroy()


@pytest.fixture
def database_url(postgres_admin_url: str) -> Iterator[str]:
    """A fresh, empty database for this test."""
    name = f"cttest_{uuid.uuid4().hex[:12]}"
    url = create_database(postgres_admin_url, name)
    try:
        yield url
    finally:
        drop_database(postgres_admin_url, name)
