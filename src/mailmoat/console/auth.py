"""Console logins: server-side sessions with an expiry, a CSRF token per session, and failed
logins counted per network and in all. All bounded (invariant 3)."""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import secrets
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from mailmoat.limits import (
    CONSOLE_LOGIN_ADDRESSES,
    CONSOLE_LOGIN_FAILURES,
    CONSOLE_LOGIN_GLOBAL_FAILURES,
    CONSOLE_LOGIN_PREFIX_V4,
    CONSOLE_LOGIN_PREFIX_V6,
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
    """Failed logins within CONSOLE_LOGIN_WINDOW, per network (/24, /64) and from everywhere
    together. A login attempt is counted as a failure *before* its password is checked
    (`reserve`) and refunded once it proves right, so parallel attempts cannot outrun the
    count; past CONSOLE_LOGIN_FAILURES for its network, or CONSOLE_LOGIN_GLOBAL_FAILURES in
    all, an attempt is refused (429) without hashing anything."""

    def __init__(self) -> None:
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._all: deque[float] = deque()
        self._noted: OrderedDict[str, float] = OrderedDict()
        self._all_noted: deque[float] = deque()

    @staticmethod
    def network(address: str) -> str:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return address
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        prefix = CONSOLE_LOGIN_PREFIX_V4 if ip.version == 4 else CONSOLE_LOGIN_PREFIX_V6
        return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))

    @staticmethod
    def _trim(times: deque[float], now: float) -> deque[float]:
        while times and times[0] <= now - CONSOLE_LOGIN_WINDOW:
            times.popleft()
        return times

    def reserve(self, address: str) -> float | None:
        """Count an attempt from `address` as failed; its stamp (for `refund`), or None when
        its network or everyone is past the limit (then nothing is counted)."""
        now = time.monotonic()
        key = self.network(address)
        times = self._trim(self._failures.get(key, deque()), now)
        if len(times) >= CONSOLE_LOGIN_FAILURES:
            return None
        if len(self._trim(self._all, now)) >= CONSOLE_LOGIN_GLOBAL_FAILURES:
            return None
        times.append(now)
        self._all.append(now)
        self._failures[key] = times
        self._failures.move_to_end(key)
        while len(self._failures) > CONSOLE_LOGIN_ADDRESSES:
            self._failures.popitem(last=False)
        return now

    def refund(self, address: str, stamp: float) -> None:
        """The attempt reserved at `stamp` was right: it no longer counts."""
        for times in (self._failures.get(self.network(address)), self._all):
            if times is not None:
                with contextlib.suppress(ValueError):
                    times.remove(stamp)

    def worth_noting(self, address: str) -> bool:
        """Whether a refusal (429) from `address` goes to the audit log: the first per network
        and window, and CONSOLE_LOGIN_GLOBAL_FAILURES per window in all, so a flood of
        refused logins cannot grow the log without bound."""
        now = time.monotonic()
        key = self.network(address)
        if now - self._noted.get(key, -CONSOLE_LOGIN_WINDOW) < CONSOLE_LOGIN_WINDOW:
            return False
        if len(self._trim(self._all_noted, now)) >= CONSOLE_LOGIN_GLOBAL_FAILURES:
            return False
        self._all_noted.append(now)
        self._noted[key] = now
        self._noted.move_to_end(key)
        while len(self._noted) > CONSOLE_LOGIN_ADDRESSES:
            self._noted.popitem(last=False)
        return True
