"""Run a coroutine at once, as far as it goes without waiting.

Admission's shared state lives in the store; in the supervisor that is the in-memory store,
whose coroutines never wait. Wrapping each new connection's connect stage in a task (a task
object, a loop turn later a step, a done callback, an entry in asyncio's task registry) cost
more than the checks themselves under a connection flood. `start` runs the coroutine up to
its first real wait on the spot (Python 3.12's eager tasks do the same); only one that waits
(a Redis store, say) needs a task for the rest.
"""

from __future__ import annotations

from collections.abc import Coroutine, Generator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Rest(Generic[T]):
    """The rest of a coroutine that `start` ran until it had to wait for `waiting`; await
    it (in a task) for the coroutine's result."""

    __slots__ = ("coro", "waiting")

    def __init__(self, coro: Coroutine[Any, Any, T], waiting: Any) -> None:
        self.coro = coro
        self.waiting = waiting

    def __await__(self) -> Generator[Any, None, T]:
        coro, waiting = self.coro, self.waiting
        while True:
            try:
                yield waiting  # the future the coroutine waits for: the task waits for it
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as err:  # cancelled meanwhile: the coroutine decides
                try:
                    waiting = coro.throw(err)
                except StopIteration as done:
                    return done.value  # type: ignore[no-any-return]
                continue
            try:
                waiting = coro.send(None)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]


def start(coro: Coroutine[Any, Any, T]) -> T | Rest[T]:
    """The coroutine's result if it finished without waiting, else the rest of it (a `Rest`).
    An exception it raises comes out here."""
    try:
        waiting = coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    return Rest(coro, waiting)
