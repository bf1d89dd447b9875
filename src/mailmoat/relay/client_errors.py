"""What can go wrong downstream: one exception class per failure, each carrying the reply the
sending client gets."""

from __future__ import annotations

from mailmoat.smtp.replies import Reply, reply


class DownstreamError(Exception):
    """Delivery could not be completed; `reply` is what to tell the sending client."""

    def __init__(self, answer: Reply, detail: str) -> None:
        super().__init__(detail)
        self.reply = answer
        self.detail = detail


class ConnectFailed(DownstreamError):
    """TCP connection refused, unreachable or timed out (451 4.4.1)."""

    def __init__(self, detail: str) -> None:
        super().__init__(
            reply(451, "4.4.1", "Downstream server unreachable, try again later"), detail
        )


class DownstreamRefused(DownstreamError):
    """The server refused the session itself: greeting or EHLO/LHLO not positive (451 4.3.2)."""

    def __init__(self, detail: str) -> None:
        super().__init__(
            reply(451, "4.3.2", "Downstream server not accepting mail, try later"), detail
        )


class DownstreamTimeout(DownstreamError):
    """No reply within the configured time (451 4.4.2)."""

    def __init__(self, detail: str) -> None:
        super().__init__(
            reply(451, "4.4.2", "Downstream server timed out, try again later"), detail
        )


class ConnectionLost(DownstreamError):
    """The server closed the connection or it broke during a command or the data (451 4.4.2)."""

    def __init__(self, detail: str) -> None:
        super().__init__(
            reply(451, "4.4.2", "Connection to downstream lost, try again later"), detail
        )


class StaleConnection(ConnectionLost):
    """A reused connection was found dead before the server answered anything in a transaction.

    Nothing of the message was accepted, so the transaction may be retried on a new connection.
    """


class ProtocolViolation(DownstreamError):
    """The server sent something that is not SMTP, or more than was asked for (451 4.5.0)."""

    def __init__(self, detail: str) -> None:
        super().__init__(reply(451, "4.5.0", "Downstream protocol error, try again later"), detail)


class TLSFailed(DownstreamError):
    """STARTTLS was required but not offered, or the handshake failed (451 4.7.5)."""

    def __init__(self, detail: str) -> None:
        super().__init__(reply(451, "4.7.5", "Downstream TLS failure, try again later"), detail)


class Unsupported(DownstreamError):
    """The message needs a service extension the server lacks; nothing was sent."""


class InternalError(DownstreamError):
    """The envelope cannot be serialised safely (a bug upstream); nothing was sent (451 4.3.0)."""

    def __init__(self, detail: str) -> None:
        super().__init__(reply(451, "4.3.0", "Internal error, try again later"), detail)
