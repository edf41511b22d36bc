"""Small helpers of the server suites."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(probe: Callable[[], Awaitable[T | None]], within: float = 20.0, every: float = 0.1) -> T:
    """Poll ``probe`` until it returns something truthy (the wait bound is a safety net, not a check)."""
    deadline = time.monotonic() + within
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached within {within}s (last value {value!r})")
        await asyncio.sleep(every)
