"""Delivery to the downstream SMTP/LMTP server over the connection pool.

`deliver()` never raises (apart from cancellation): every outcome becomes one `DeliveryResult`.
`accepted` is True only when MAIL, every RCPT and the end of data were all accepted (for LMTP:
the end of data for every recipient). The rules, in order:

* connection refused / unreachable -> 451 4.4.1; timeouts, a connection lost at any point
  (including mid-DATA and before the end-of-data reply) -> 451 4.4.2; pool exhausted -> 451 4.3.2
* MAIL refused -> the downstream's reply
* any RCPT 4xx -> the (first) downstream 4xx; else any RCPT 5xx -> the (first) downstream 5xx
* DATA refused, or end of data 4xx/5xx -> the downstream's reply
* LMTP end of data, mixed: any 4xx -> 451 (with that reply's enhanced code and text), else the
  first 5xx

Downstream replies are passed on with their code and enhanced code and text sanitised by
`clean_text`; 421 becomes 451 (only mailmoat decides to close the client's session), and
500/502/503 (the downstream did not understand *us*) become 451 4.5.0, because they say nothing
about the message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from mailmoat.config import Settings
from mailmoat.limits import MAX_PASSED_LINES
from mailmoat.message import Message
from mailmoat.relay.base import DeliveryResult
from mailmoat.relay.capabilities import Capabilities
from mailmoat.relay.client_errors import DownstreamError, StaleConnection
from mailmoat.relay.pool import DownstreamPool
from mailmoat.relay.smtp_client import DownstreamClient, Transaction, positive
from mailmoat.smtp.replies import Reply, clean_text, reply

log = logging.getLogger("mailmoat.relay.downstream")


_OUR_FAULT = {500, 502, 503}


def pass_through(r: Reply) -> Reply:
    """A downstream refusal as the client should see it."""
    lines = tuple(clean_text(line) for line in r.lines[:MAX_PASSED_LINES]) or ("",)
    if not any(lines):
        lines = ("Refused by downstream server",)
    if 400 <= r.code < 500:
        code = 451 if r.code == 421 else r.code
        return Reply(code, r.enhanced or "4.0.0", lines)
    if 500 <= r.code < 600 and r.code not in _OUR_FAULT:
        return Reply(r.code, r.enhanced or "5.0.0", lines)
    return reply(451, "4.5.0", "Unexpected reply from downstream server, try again later")


def _first(replies: list[Reply], low: int, high: int) -> Reply | None:
    return next((r for r in replies if low <= r.code < high), None)


def outcome(tx: Transaction, lmtp: bool) -> tuple[Reply | None, str]:
    """(refusal to give the client, or None when every recipient was accepted; log detail)."""
    if not positive(tx.mail):
        return pass_through(tx.mail), f"MAIL: {tx.mail}"
    rcpts = [r for r in tx.rcpts if r is not None]
    bad = [r for r in rcpts if not positive(r)]
    if bad or len(rcpts) != len(tx.rcpts):
        worst = _first(bad, 400, 500) or _first(bad, 500, 600) or (bad[0] if bad else None)
        if worst is None:
            return reply(451, "4.3.0", "Internal error, try again later"), "RCPT not sent"
        return pass_through(worst), f"RCPT: {worst}"
    if tx.data is None or tx.data.code != 354:
        if tx.data is None:
            return reply(451, "4.3.0", "Internal error, try again later"), "DATA not sent"
        return pass_through(tx.data), f"DATA: {tx.data}"
    if not tx.end:
        return reply(451, "4.4.2", "No reply from downstream, try again later"), "no end reply"
    if all(positive(r) for r in tx.end):
        return None, " / ".join(str(r) for r in tx.end)
    detail = "end of data: " + " / ".join(str(r) for r in tx.end)
    if lmtp:
        soft = _first(tx.end, 400, 500)
        if soft is not None:
            return Reply(451, soft.enhanced or "4.0.0", pass_through(soft).lines), detail
        hard = _first(tx.end, 500, 600)
        if hard is not None:
            return pass_through(hard), detail
    bad_end = next(r for r in tx.end if not positive(r))
    return pass_through(bad_end), detail


class DownstreamDelivery:
    """`Delivery` to `settings.relay.downstream` over a `DownstreamPool`."""

    def __init__(self, settings: Settings, pool: DownstreamPool | None = None) -> None:
        if settings.relay.downstream is None:
            raise ValueError("relay.downstream is not set")
        self._where = settings.relay.downstream
        self._lmtp = settings.relay.protocol == "lmtp"
        self.pool = pool or DownstreamPool(settings)
        self._learning: asyncio.Task[None] | None = None

    @property
    def capabilities(self) -> Capabilities | None:
        return self.pool.capabilities

    async def start(self) -> None:
        """Learn the downstream's extensions before the first client (one connection attempt,
        bounded by relay.connect_timeout; a downstream down for now is learned later)."""
        await self.learn()

    async def learn(self) -> None:
        """Reach the downstream once (one attempt shared by every caller meanwhile)."""
        if self.pool.capabilities is not None:
            return
        if self._learning is None or self._learning.done():
            self._learning = asyncio.get_running_loop().create_task(self._reach())
        await asyncio.shield(self._learning)

    async def _reach(self) -> None:
        try:
            client = await self.pool.acquire()  # a new connection tells the pool its extensions
        except DownstreamError as err:
            log.warning("downstream %s: extensions unknown: %s", self._where, err.detail)
            return
        self.pool.release(client)

    async def deliver(self, message: Message) -> DeliveryResult:
        qid = message.queue_id
        try:
            try:
                tx = await self._attempt(message)
            except StaleConnection as err:
                # nothing was sent past the envelope: safe to retry once. Idle connections from
                # the same period are likely dead too (downstream restarted): drop them all.
                log.info("queue %s: %s; retrying on a new connection", qid, err.detail)
                self.pool.discard_idle()
                tx = await self._attempt(message)
            refusal, detail = outcome(tx, self._lmtp)
        except DownstreamError as err:
            log.warning("queue %s: downstream %s: %s", qid, self._where, err.detail)
            return DeliveryResult(err.reply, False, f"downstream {self._where}: {err.detail}")
        except Exception as err:  # a bug must still give the client a 4xx, never a traceback
            log.exception("queue %s: delivery to %s failed", qid, self._where)
            return DeliveryResult(
                reply(451, "4.3.0", "Internal error, try again later"),
                False,
                f"internal error: {type(err).__name__}: {err}",
            )
        detail = f"downstream {self._where}: {detail}"
        if refusal is not None:
            log.info("queue %s: refused: %s", qid, detail)
            return DeliveryResult(refusal, False, detail)
        log.info("queue %s: delivered: %s", qid, detail)
        return DeliveryResult(reply(250, "2.0.0", f"Ok: queued as {qid}"), True, detail)

    async def _attempt(self, message: Message) -> Transaction:
        client: DownstreamClient = await self.pool.acquire()
        reuse = False
        try:
            tx = await client.send(message)
            reuse = True
            return tx
        except DownstreamError:
            reuse = True  # the pool keeps it only if the client says it is still usable
            raise
        finally:
            self.pool.release(client, reuse=reuse)

    async def close(self) -> None:
        if self._learning is not None:
            self._learning.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._learning
        await self.pool.close()
