"""The Redis client of the store, set up for a mail gateway, and small helpers of its calls."""

from __future__ import annotations

import asyncio
import math
import ssl
from collections import Counter
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ResponseError

from mailmoat.config import ConfigError
from mailmoat.limits import REDIS_POOL, REDIS_TIMEOUT


def ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


def us(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1_000_000))


def connect(url: str) -> aioredis.Redis:
    """A client with short timeouts, no retries and a bounded, blocking pool; over TLS
    (`rediss://`), one SSL context for the pool, made now (see `_one_tls_context`)."""
    no_retry = Retry(NoBackoff(), 0)
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=REDIS_POOL,
        timeout=REDIS_TIMEOUT,
        socket_timeout=REDIS_TIMEOUT,
        socket_connect_timeout=REDIS_TIMEOUT,
        retry=no_retry,
    )
    if issubclass(pool.connection_class, SSLConnection):
        pool.connection_class = _one_tls_context(pool.connection_kwargs)
    return aioredis.Redis(connection_pool=pool, retry=no_retry)


def _one_tls_context(options: dict[str, Any]) -> type[SSLConnection]:
    """redis-py makes an SSL context for every connection, inside its connect: that loads the
    system's CA bundle (0.2 s of blocked event loop on a small machine, more than a
    REDIS_TIMEOUT on a busy one) each time the pool grows. Here the pool's connections share
    one, made before the store serves; a bad TLS setup (a CA or key file that is missing or
    not PEM) is a one-line configuration error at start, not a store that times out."""
    try:
        context = SSLConnection(**options).ssl_context
        context.get()
    except (OSError, ValueError, ssl.SSLError) as err:
        reason = getattr(err, "strerror", None) or str(err)
        raise ConfigError([("store.url", f"cannot set up TLS to Redis: {reason}")]) from None

    class SharedContext(SSLConnection):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.ssl_context = context

    return SharedContext


def calls_of(counts: Counter[str], fn: str) -> Callable[[], int]:
    return lambda: counts[fn]


def not_loaded(answer: Any) -> bool:
    """The answer of a call that did not run: the functions are gone (a restart, a flush)."""
    text = str(answer).lower()
    return isinstance(answer, ResponseError) and (
        "function not found" in text or "noscript" in text
    )


def stop_if_cancelled() -> None:
    """Raise CancelledError when the running task was asked to stop: redis-py may turn the
    CancelledError of a call it was in into a ConnectionError, which a loop that outlives
    failed calls would otherwise catch and go on (the store's close then waited for ever)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
