"""Console logins: server-side sessions with an expiry, a CSRF token per session, and failed
logins counted per address. All bounded (invariant 3)."""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from mailmoat.limits import (
    CONSOLE_LOGIN_ADDRESSES,
    CONSOLE_LOGIN_FAILURES,
    CONSOLE_LOGIN_WINDOW,
    CONSOLE_MAX_SESSIONS,
)


@dataclass(slots=True)
class Login:
    user: str
    csrf: str
    expires: float
    address: str = field(default="")


class Sessions:
    """Session id (the cookie, 256 random bits) -> Login; a login unused for `lifetime` s ends."""

    def __init__(self, lifetime: float) -> None:
        self.lifetime = lifetime
        self._by_id: OrderedDict[str, Login] = OrderedDict()

    def open(self, user: str, address: str) -> tuple[str, Login]:
        sid = secrets.token_urlsafe(32)
        login = Login(user, secrets.token_urlsafe(32), time.monotonic() + self.lifetime, address)
        self._by_id[sid] = login
        while len(self._by_id) > CONSOLE_MAX_SESSIONS:
            self._by_id.popitem(last=False)
        return sid, login

    def get(self, sid: str | None) -> Login | None:
        if not sid:
            return None
        login = self._by_id.get(sid)
        now = time.monotonic()
        if login is None or login.expires < now:
            self._by_id.pop(sid, None)
            return None
        login.expires = now + self.lifetime
        self._by_id.move_to_end(sid)
        return login

    def close(self, sid: str | None) -> None:
        if sid:
            self._by_id.pop(sid, None)


def csrf_ok(login: Login, given: str) -> bool:
    return bool(given) and hmac.compare_digest(given.encode(), login.csrf.encode())


class LoginThrottle:
    """Failed logins per address within CONSOLE_LOGIN_WINDOW; past CONSOLE_LOGIN_FAILURES the
    address is refused (429) until the oldest failure leaves the window."""

    def __init__(self) -> None:
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, address: str, now: float) -> deque[float]:
        times = self._failures.get(address, deque())
        while times and times[0] <= now - CONSOLE_LOGIN_WINDOW:
            times.popleft()
        return times

    def blocked(self, address: str) -> bool:
        return len(self._recent(address, time.monotonic())) >= CONSOLE_LOGIN_FAILURES

    def failed(self, address: str) -> None:
        now = time.monotonic()
        times = self._recent(address, now)
        times.append(now)
        while len(times) > CONSOLE_LOGIN_FAILURES:
            times.popleft()
        self._failures[address] = times
        self._failures.move_to_end(address)
        while len(self._failures) > CONSOLE_LOGIN_ADDRESSES:
            self._failures.popitem(last=False)

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)
