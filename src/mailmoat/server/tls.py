"""TLS for the clients: the server's context (`server.tls_cert`, `server.tls_key`) and the
STARTTLS upgrade of a session (RFC 3207)."""

from __future__ import annotations

import logging
import ssl

from mailmoat import logs
from mailmoat.config import Settings
from mailmoat.server.session_base import SessionBase


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    server = settings.server
    if server.tls_cert is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(server.tls_cert, server.tls_key)
    return ctx


class TlsUpgrade(SessionBase):
    """The session's STARTTLS (a part of `SmtpSession`)."""

    __slots__ = ()

    async def _starttls(self) -> None:
        conn = self.conn
        assert self.transport is not None and self.state.tls_context is not None
        conn.accept()
        self._flush()
        try:
            new = await self.host.loop.start_tls(
                self.transport,
                self,
                self.state.tls_context,
                server_side=True,
                ssl_handshake_timeout=self.state.settings.timeouts.command,
            )
        except (TimeoutError, OSError, ConnectionError) as err:
            self._close_reason = "tls_failed"
            logs.event("tls_failed", logging.INFO, client=self.client.address, error=str(err))
            if self.transport is not None:
                self.transport.abort()
            return
        if new is None:
            return
        self.transport = new
        conn.tls_started()
        self.client.tls = True
        self.client.helo = None
