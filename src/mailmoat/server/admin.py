"""The stats endpoint that `mailmoat stats` reads: on 127.0.0.1/::1 or a unix socket, off by
default (`admin.listen`). A client connects and gets one JSON document (the `Stats` snapshot),
then the connection closes; it sends nothing, so there is nothing to parse or abuse. A unix
socket is made readable by its owner only."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from mailmoat.config import split_endpoint

MAX_CLIENTS = 8
"""Admin connections served at once; more are closed at once (invariant 3)."""


class AdminServer:
    def __init__(
        self, listen: str, snapshot: Callable[[], dict[str, Any] | Awaitable[dict[str, Any]]]
    ) -> None:
        """`snapshot` makes the document (a supervisor asks its workers for theirs)."""
        self.listen = listen
        self.snapshot = snapshot
        self.server: asyncio.Server | None = None
        self.address: tuple[str, int] | str | None = None
        self._busy = 0

    async def start(self) -> None:
        if self.listen.startswith("/"):
            path = Path(self.listen)
            with contextlib.suppress(FileNotFoundError):
                if path.is_socket():
                    path.unlink()
            old = os.umask(0o177)
            try:
                self.server = await asyncio.start_unix_server(self._serve, path)
            finally:
                os.umask(old)
            self.address = str(path)
        else:
            host, port = split_endpoint(self.listen)
            self.server = await asyncio.start_server(self._serve, host, port, reuse_address=True)
            sock: socket.socket = self.server.sockets[0]
            self.address = sock.getsockname()[:2]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._busy >= MAX_CLIENTS:
            writer.close()
            return
        self._busy += 1
        try:
            doc = self.snapshot()
            if inspect.isawaitable(doc):
                doc = await asyncio.wait_for(doc, 5)
            writer.write(json.dumps(doc).encode() + b"\n")
            await asyncio.wait_for(writer.drain(), 5)
        except (OSError, TimeoutError):
            pass
        finally:
            self._busy -= 1
            writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await self.server.wait_closed()
        if isinstance(self.address, str):
            with contextlib.suppress(OSError):
                Path(self.address).unlink()


def fetch(listen: str, timeout: float = 5.0) -> dict[str, object]:
    """Read one snapshot from a running mailmoat's admin endpoint (blocking; for the CLI)."""
    if listen.startswith("/"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(listen)
    else:
        sock = socket.create_connection(split_endpoint(listen), timeout=timeout)
    with sock:
        chunks = []
        total = 0
        while chunk := sock.recv(65536):
            chunks.append(chunk)
            total += len(chunk)
            if total > 16 * 1024 * 1024:
                raise ValueError("stats document too large")
    doc = json.loads(b"".join(chunks))
    if not isinstance(doc, dict):
        raise ValueError("stats document is not an object")
    return doc
