"""The service's own Redis clients, made in one place from REDIS_URL (the channel layer and Celery
make theirs from the same URL). Shared ones are reused: `shared()` in a process (its connection pool
is thread-safe), `for_loop()` per event loop (a redis.asyncio client belongs to the loop that made
it). `new()` / `new_async()` are a caller's own, for different time-outs, closed by the caller."""
from __future__ import annotations

import asyncio
from typing import Optional

import redis
import redis.asyncio as aioredis
from django.conf import settings

CONNECT_TIMEOUT_S = 5.0

_shared: Optional[redis.Redis] = None
_loops: dict = {}  # event loop -> its client


def new(timeout: float = CONNECT_TIMEOUT_S) -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=timeout, socket_connect_timeout=timeout)


def new_async(socket_timeout: Optional[float] = None,
              connect_timeout: float = CONNECT_TIMEOUT_S) -> aioredis.Redis:
    return aioredis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=connect_timeout,
                                   socket_timeout=socket_timeout)


def shared() -> redis.Redis:
    global _shared
    if _shared is None:
        _shared = new()
    return _shared


def for_loop() -> aioredis.Redis:
    loop = asyncio.get_running_loop()
    client = _loops.get(loop)
    if client is None:
        client = _loops[loop] = new_async()
    return client
