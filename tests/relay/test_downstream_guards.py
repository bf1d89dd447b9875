"""How downstream replies become the client's verdict, pinned where mutation testing
(scripts/mutation over relay/downstream.py) found nothing holding them: the bound on the lines
passed on, which refusals say the downstream did not understand *us* (451, not the 5xx), a
temporary RCPT refusal winning over a permanent one at every 4xx code, an RCPT not sent, and the
4xx a bug in delivery gives."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mailmoat.relay import DownstreamDelivery
from mailmoat.relay.downstream import outcome, pass_through
from mailmoat.relay.smtp_client import Transaction
from mailmoat.smtp.replies import Reply, reply
from tests.relay.relay_support import MessageFactory, SettingsFactory
from tests.support.waiting import wait_for

OK = reply(250, "2.1.5", "ok")


def test_at_most_five_lines_of_a_downstream_refusal_are_passed_on() -> None:
    lines = tuple(f"line {i}" for i in range(1, 8))
    passed = pass_through(Reply(550, "5.7.1", lines))
    assert passed.lines == lines[:5]
    assert pass_through(Reply(550, "5.7.1", lines[:5])).lines == lines[:5]
    assert pass_through(Reply(550, "5.7.1", lines[:4])).lines == lines[:4]


@pytest.mark.parametrize("code", [500, 502, 503])
def test_a_downstream_that_did_not_understand_us_gives_451(code: int) -> None:
    """500/502/503 say nothing about the message: the sender must retry, not bounce it."""
    passed = pass_through(reply(code, "5.5.1", "what?"))
    assert (passed.code, passed.enhanced) == (451, "4.5.0")


@pytest.mark.parametrize("code", [501, 504, 550, 552, 553, 554, 599])
def test_other_permanent_refusals_pass_as_they_are(code: int) -> None:
    passed = pass_through(reply(code, "5.1.1", "no"))
    assert (passed.code, passed.enhanced, passed.lines) == (code, "5.1.1", ("no",))


@pytest.mark.parametrize("soft", [400, 450, 452, 499])
def test_a_temporary_rcpt_refusal_wins_over_a_permanent_one(soft: int) -> None:
    """One recipient 5xx, another 4xx: the message must be retried (4xx), whatever the 4xx."""
    tx = Transaction(
        mail=reply(250, "2.1.0", "ok"),
        rcpts=[OK, reply(550, "5.1.1", "no such user"), reply(soft, "4.2.2", "full")],
    )
    refusal, detail = outcome(tx, lmtp=False)
    assert refusal is not None
    assert (refusal.code, refusal.enhanced) == (soft, "4.2.2")
    assert detail.startswith("RCPT: ")


def test_a_recipient_whose_rcpt_was_never_sent_is_no_accept() -> None:
    tx = Transaction(mail=reply(250, "2.1.0", "ok"), rcpts=[OK, None])
    refusal, detail = outcome(tx, lmtp=False)
    assert refusal is not None
    assert (refusal.code, refusal.enhanced) == (451, "4.3.0")
    assert detail == "RCPT not sent"


class BrokenPool:
    """A pool with a bug: acquiring a connection raises something no DownstreamError."""

    capabilities = None

    async def acquire(self) -> Any:
        raise RuntimeError("bug in the pool")

    def release(self, client: Any, reuse: bool = False) -> None:
        raise AssertionError("nothing was acquired")

    def discard_idle(self) -> None:
        return None

    async def close(self) -> None:
        return None


async def test_a_bug_in_delivery_gives_451_4_3_0_never_a_traceback(
    make_settings: SettingsFactory, make_message: MessageFactory
) -> None:
    d = DownstreamDelivery(make_settings(1), pool=BrokenPool())  # type: ignore[arg-type]
    result = await d.deliver(make_message())
    assert not result.accepted
    assert (result.reply.code, result.reply.enhanced) == (451, "4.3.0")
    assert "RuntimeError" in result.detail


@pytest.mark.parametrize("code", [400, 450, 452, 499])
def test_temporary_refusals_pass_with_their_code(code: int) -> None:
    passed = pass_through(reply(code, "4.2.0", "later"))
    assert (passed.code, passed.enhanced) == (code, "4.2.0")
    assert pass_through(reply(421, "4.3.2", "closing")).code == 451


@pytest.mark.parametrize("answer", [reply(250, "2.0.0", "ok"), reply(334, None, "go")])
def test_data_answered_with_anything_but_354_is_no_accept(answer: Reply) -> None:
    """Whatever end-of-data replies follow, a DATA that was not answered 354 is a refusal."""
    mail = reply(250, "2.1.0", "ok")
    tx = Transaction(mail=mail, rcpts=[OK], data=answer, end=[reply(250, "2.0.0", "queued")])
    refusal, detail = outcome(tx, lmtp=False)
    assert refusal is not None
    assert (refusal.code, refusal.enhanced) == (451, "4.5.0")
    assert detail.startswith("DATA: ")


@pytest.mark.parametrize(
    ("end", "expected"),
    [
        ([OK, reply(500, "5.5.1", "what?")], (451, "4.5.0")),  # did not understand us
        ([OK, reply(550, "5.1.1", "no")], (550, "5.1.1")),
        ([OK, reply(550, "5.1.1", "no"), reply(452, "4.2.2", "full")], (451, "4.2.2")),
        ([OK, reply(354, None, "go on")], (451, "4.5.0")),  # a protocol violation
    ],
)
def test_lmtp_end_of_data_verdicts(end: list[Reply], expected: tuple[int, str]) -> None:
    mail = reply(250, "2.1.0", "ok")
    go = reply(354, None, "go")
    tx = Transaction(mail=mail, rcpts=[OK] * len(end), data=go, end=end)
    refusal, _ = outcome(tx, lmtp=True)
    assert refusal is not None
    assert (refusal.code, refusal.enhanced) == expected


@pytest.mark.parametrize("code", [354, 399])
def test_a_3xx_where_a_refusal_belongs_is_451_4_5_0(code: int) -> None:
    passed = pass_through(reply(code, None, "go on"))
    assert (passed.code, passed.enhanced) == (451, "4.5.0")


@pytest.mark.parametrize(
    ("refusals", "expected"),
    [
        ([(550, "5.1.1"), (500, "5.5.1")], (550, "5.1.1")),  # the first 5xx, no 4xx among them
        ([(500, "5.5.1"), (550, "5.1.1")], (451, "4.5.0")),
        ([(599, "5.0.0"), (550, "5.1.1")], (599, "5.0.0")),
    ],
)
def test_the_first_permanent_rcpt_refusal_is_the_verdict(
    refusals: list[tuple[int, str]], expected: tuple[int, str]
) -> None:
    rcpts: list[Reply | None] = [OK, *(reply(c, e, "no") for c, e in refusals)]
    refusal, _ = outcome(Transaction(mail=reply(250, "2.1.0", "ok"), rcpts=rcpts), lmtp=False)
    assert refusal is not None
    assert (refusal.code, refusal.enhanced) == expected


def test_data_never_sent_is_451_4_3_0() -> None:
    tx = Transaction(mail=reply(250, "2.1.0", "ok"), rcpts=[OK], data=None)
    refusal, detail = outcome(tx, lmtp=False)
    assert refusal is not None
    assert (refusal.code, refusal.enhanced, detail) == (451, "4.3.0", "DATA not sent")


@pytest.mark.parametrize(
    ("end", "expected"),
    [
        ([OK, reply(550, "5.1.1", "no"), reply(400, "4.0.0", "later")], (451, "4.0.0")),
        ([OK, reply(550, "5.1.1", "no"), reply(499, "4.9.9", "later")], (451, "4.9.9")),
        ([OK, reply(500, "5.5.1", "what?"), reply(550, "5.1.1", "no")], (451, "4.5.0")),
        ([OK, reply(599, "5.0.0", "no"), reply(550, "5.1.1", "no")], (599, "5.0.0")),
    ],
)
def test_lmtp_first_temporary_then_first_permanent(
    end: list[Reply], expected: tuple[int, str]
) -> None:
    mail = reply(250, "2.1.0", "ok")
    tx = Transaction(mail=mail, rcpts=[OK] * len(end), data=reply(354, None, "go"), end=end)
    refusal, _ = outcome(tx, lmtp=True)
    assert refusal is not None
    assert (refusal.code, refusal.enhanced) == expected


def test_no_end_of_data_reply_is_451_4_4_2() -> None:
    """The data went out and no verdict came back: the sender keeps the message and retries."""
    mail = reply(250, "2.1.0", "ok")
    tx = Transaction(mail=mail, rcpts=[OK], data=reply(354, None, "go"), end=[])
    refusal, detail = outcome(tx, lmtp=False)
    assert refusal is not None
    assert (refusal.code, refusal.enhanced, detail) == (451, "4.4.2", "no end reply")


@pytest.mark.parametrize(
    ("refusals", "expected"),
    [
        ([(399, None), (550, "5.1.1")], (550, "5.1.1")),  # a 3xx is no refusal to prefer
        ([(354, None), (399, None)], (451, "4.5.0")),  # out of protocol: retry later
        ([(399, None)], (451, "4.5.0")),
    ],
)
def test_a_3xx_answer_to_rcpt_is_never_an_accept(
    refusals: list[tuple[int, str | None]], expected: tuple[int, str]
) -> None:
    rcpts: list[Reply | None] = [OK, *(reply(c, e, "odd") for c, e in refusals)]
    tx = Transaction(mail=reply(250, "2.1.0", "ok"), rcpts=rcpts)
    refusal, detail = outcome(tx, lmtp=False)
    assert refusal is not None
    assert (refusal.code, refusal.enhanced) == expected
    assert detail == f"RCPT: {rcpts[1] if expected[0] == 451 else rcpts[-1]}"


@pytest.mark.parametrize(("code", "enhanced"), [(451, "4.3.0"), (554, "5.5.0")])
def test_a_refused_data_command_is_the_verdict(code: int, enhanced: str) -> None:
    mail = reply(250, "2.1.0", "ok")
    tx = Transaction(mail=mail, rcpts=[OK], data=reply(code, enhanced, "no"))
    refusal, detail = outcome(tx, lmtp=False)
    assert refusal is not None
    assert (refusal.code, refusal.enhanced) == (code, enhanced)
    assert detail.startswith("DATA: ")


def test_lmtp_a_3xx_end_reply_is_451_4_5_0() -> None:
    mail = reply(250, "2.1.0", "ok")
    end = [OK, reply(399, None, "odd")]
    tx = Transaction(mail=mail, rcpts=[OK, OK], data=reply(354, None, "go"), end=end)
    refusal, _ = outcome(tx, lmtp=True)
    assert refusal is not None
    assert (refusal.code, refusal.enhanced) == (451, "4.5.0")


async def test_a_delivery_cancelled_while_a_reply_is_owed_drops_its_connection(
    make_settings: SettingsFactory, make_message: MessageFactory
) -> None:
    """A delivery cancelled mid-dialogue (here while the RSET after a refused MAIL waits for its
    answer) hands its connection back as "state unknown": it is dropped, never kept idle, where
    the reply still owed would be read as the next transaction's answer to MAIL. The next
    delivery goes on a new connection and is accepted."""
    rset_sent = asyncio.Event()
    first_gone = asyncio.Event()
    connections = 0

    async def server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        first = connections == 1
        writer.write(b"220 raw.test\r\n")  # no PIPELINING: one command at a time
        try:
            while line := await reader.readline():
                if line.startswith(b"EHLO"):
                    writer.write(b"250 raw.test\r\n")
                elif line.startswith(b"MAIL"):
                    writer.write(b"550 5.7.1 not now\r\n" if first else b"250 ok\r\n")
                elif line.startswith(b"RSET") and first:
                    rset_sent.set()  # the answer is held: read on until the client goes away
                    while await reader.read(65536):
                        pass
                    break
                elif line.startswith(b"RCPT"):
                    writer.write(b"250 ok\r\n")
                elif line == b"DATA\r\n":
                    writer.write(b"354 go ahead\r\n")
                    content = b""
                    while not content.endswith(b"\r\n.\r\n"):
                        content += await reader.readline()
                    writer.write(b"250 2.0.0 queued\r\n")
                elif line.startswith(b"QUIT"):
                    writer.write(b"221 bye\r\n")
                    break
        except ConnectionError:
            pass
        finally:
            if first:
                first_gone.set()
            writer.close()

    listener = await asyncio.start_server(server, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    d = DownstreamDelivery(make_settings(port, idle_timeout=60.0, command_timeout=5.0))
    try:
        cancelled = asyncio.create_task(d.deliver(make_message(queue_id="Q1")))
        await wait_for(rset_sent.is_set, "the RSET after the refused MAIL")
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        assert (d.pool.idle, d.pool.busy) == (0, 0)
        await wait_for(first_gone.is_set, "the cancelled delivery's connection dropped")
        result = await d.deliver(make_message(queue_id="Q2"))
        assert result.accepted, result
        assert connections == 2
    finally:
        await d.close()
        listener.close()
        await listener.wait_closed()
