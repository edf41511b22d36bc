"""Storage backends behind one interface (base.Store)."""

from __future__ import annotations

from codetether_server.settings import Settings
from codetether_server.store.base import Store


def make_store(settings: Settings) -> Store:
    if settings.storage != "memory":
        raise NotImplementedError(f"{settings.storage} storage: not written yet")
    from codetether_server.store.memory import MemoryStore

    return MemoryStore()


__all__ = ["Store", "make_store"]
