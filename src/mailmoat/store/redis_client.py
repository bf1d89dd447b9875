"""The Redis client of the store, set up for a mail gateway, and small helpers of its calls."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ResponseError

from mailmoat.limits import REDIS_POOL, REDIS_TIMEOUT


def ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


def us(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1_000_000))


def connect(url: str) -> aioredis.Redis:
    """A client with short timeouts, no retries and a bounded, blocking pool."""
    no_retry = Retry(NoBackoff(), 0)
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=REDIS_POOL,
        timeout=REDIS_TIMEOUT,
        socket_timeout=REDIS_TIMEOUT,
        socket_connect_timeout=REDIS_TIMEOUT,
        retry=no_retry,
    )
    return aioredis.Redis(connection_pool=pool, retry=no_retry)


def calls_of(counts: Counter[str], fn: str) -> Callable[[], int]:
    return lambda: counts[fn]


def not_loaded(answer: Any) -> bool:
    """The answer of a call that did not run: the functions are gone (a restart, a flush)."""
    text = str(answer).lower()
    return isinstance(answer, ResponseError) and (
        "function not found" in text or "noscript" in text
    )
