"""Storage backends behind one interface (base.Store)."""

from __future__ import annotations

from codetether_server.settings import Settings
from codetether_server.store.base import Store


def make_store(settings: Settings) -> Store:
    if settings.storage == "postgres":
        from codetether_server.store.postgres import PostgresStore

        return PostgresStore(settings.database_url, pool_size=settings.db_pool_size)
    if settings.storage == "redis":
        from codetether_server.store.redis import RedisStore

        return RedisStore(settings.redis_url, settings.redis_prefix)
    from codetether_server.store.memory import MemoryStore

    return MemoryStore()


__all__ = ["Store", "make_store"]
