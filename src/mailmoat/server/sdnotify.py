"""systemd's readiness protocol (sd_notify(3)) without libsystemd.

Under `Type=notify` systemd passes the path of a datagram socket in `NOTIFY_SOCKET` and waits
for `READY=1` before it counts the service as started; `STOPPING=1` and `RELOADING=1` say
what the service is doing, and with `WatchdogSec=` it expects `WATCHDOG=1` at least every
`WATCHDOG_USEC` microseconds or restarts the service. Without `NOTIFY_SOCKET` every call here
does nothing, so the same code runs outside systemd.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time

from mailmoat import logs


def _address() -> str | None:
    path = os.environ.get("NOTIFY_SOCKET", "")
    if not path or path[0] not in "/@":
        return None
    return "\0" + path[1:] if path[0] == "@" else path  # "@name": the abstract namespace


def notify(*states: str) -> bool:
    """Send `states` (e.g. "READY=1", "STATUS=...") as one datagram; whether it was sent."""
    address = _address()
    if address is None:
        return False
    message = "\n".join(states).encode("utf-8", "replace")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(message, address)
    except OSError as err:
        logs.event("warning", 30, message=f"cannot notify systemd at {address!r}: {err}")
        return False
    return True


def reloading() -> bool:
    """RELOADING=1 with the monotonic time systemd 253+ asks for (older ones ignore it)."""
    return notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings (half of systemd's timeout), or None when unwatched."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2_000_000


async def watchdog() -> None:
    """Ping systemd's watchdog for as long as the event loop runs: a hung loop stops the pings,
    and systemd restarts the service."""
    interval = watchdog_interval()
    if interval is None:
        return
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(interval)
