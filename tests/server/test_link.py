"""The supervisor-worker link: its messages, their codec, and descriptors in batches."""

from __future__ import annotations

import asyncio
import dataclasses
import marshal
import socket
from typing import Any

import pytest

from mailmoat.policy.base import Decision
from mailmoat.server.link import (
    MAX_FDS,
    Answer,
    Closed,
    Failed,
    Handover,
    Link,
    LinkError,
    Message,
    Ready,
    Request,
    Stop,
    StressMode,
    Strike,
    decode,
    encode,
    socket_pair,
)
from mailmoat.smtp.replies import reply
from tests.support.waiting import wait_for

HELD = reply(421, "4.7.0", "busy", "try later")

EVERY_MESSAGE: list[Message] = [
    Handover(7, "192.0.2.1", 2525, False, ("pregreet.pass",), None, True),
    Handover(8, "2001:db8::1", 25, True, (), HELD, False),
    Handover(9, "192.0.2.2", 25, False, (), Decision(reply=HELD, delay=2.5, close=True), False),
    Handover(10, "192.0.2.3", 25, False, (), Decision(delay=1.0), True),
    StressMode(True),
    Stop(3.5),
    Ready(4242),
    Failed("no such file: /etc/mailmoat/users"),
    Closed((1, 2, 3), 2),
    Strike("192.0.2.9", "rate"),
    Request(5, "store", ("hit", "rate:192.0.2.9", 60.0, 31)),
    Answer(5, True, 12),
    Answer(6, False, "KeyError('x')"),
]


@pytest.mark.parametrize("message", EVERY_MESSAGE, ids=lambda m: m.tag)
def test_every_message_survives_the_codec(message: Message) -> None:
    assert decode(encode([message])) == [message]


@pytest.mark.parametrize("message", EVERY_MESSAGE, ids=lambda m: m.tag)
def test_every_message_is_frozen(message: Message) -> None:
    field = dataclasses.fields(message)[0].name  # type: ignore[arg-type]
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(message, field, None)
    assert not hasattr(message, "__dict__")  # slots: no room for anything else either


def test_a_packet_holds_several_messages_in_order() -> None:
    assert decode(encode(EVERY_MESSAGE)) == EVERY_MESSAGE


def test_the_wire_form_is_tag_then_fields() -> None:
    """What the protocol description at the top of link.py says travels."""
    assert marshal.loads(encode([Strike("192.0.2.9", "rate"), Stop(1.0)])) == (
        ("strike", "192.0.2.9", "rate"),
        ("stop", 1.0),
    )


@pytest.mark.parametrize(
    "packet",
    [
        b"\x00garbage",
        marshal.dumps(("strike", "192.0.2.9", "rate")),  # a message, not a tuple of them
        marshal.dumps((("nosuch", 1),)),
        marshal.dumps((("strike", "192.0.2.9"),)),  # a field missing
        marshal.dumps((("stop", 1.0, 2.0),)),  # one too many
        marshal.dumps(((),)),
    ],
)
def test_what_is_not_a_message_is_a_value_error(packet: bytes) -> None:
    with pytest.raises(ValueError):
        decode(packet)


class Ends:
    """Both ends of a link in one event loop, recording what each received."""

    def __init__(self, serve: Any = None) -> None:
        ours, theirs = socket_pair()
        self.got: list[tuple[Message, socket.socket | None]] = []
        self.supervisor = Link(ours, lambda m, s: None, serve)
        self.worker = Link(theirs, lambda m, s: self.got.append((m, s)), serve)

    def close(self) -> None:
        self.supervisor.close()
        self.worker.close()
        for _, sock in self.got:
            if sock is not None:
                sock.close()


async def test_a_burst_of_connections_goes_in_one_packet_with_its_descriptors() -> None:
    ends = Ends()
    pairs = [socket.socketpair() for _ in range(3)]
    try:
        batch = [
            (Handover(n, f"192.0.2.{n}", 25, False, (), None, True), a.fileno())
            for n, (a, _) in enumerate(pairs, 1)
        ]
        assert ends.supervisor.send_fds(batch)
        await wait_for(lambda: len(ends.got) == 3, "three hand-overs received")
        for (message, sock), (_, far) in zip(ends.got, pairs, strict=True):
            assert isinstance(message, Handover) and sock is not None
            sock.send(f"conn {message.conn_id}".encode())  # each descriptor is its connection
            assert far.recv(64) == f"conn {message.conn_id}".encode()
    finally:
        ends.close()
        for a, b in pairs:
            a.close()
            b.close()


async def test_more_descriptors_than_a_packet_holds_is_refused() -> None:
    ends = Ends()
    try:
        batch = [(Stop(1.0), 0)] * (MAX_FDS + 1)
        with pytest.raises(ValueError):
            ends.supervisor.send_fds(batch)
    finally:
        ends.close()


async def test_descriptors_that_do_not_match_the_messages_are_closed() -> None:
    """A packet whose descriptors do not pair with its messages is dropped whole."""
    ends = Ends()
    a, b = socket.socketpair()
    try:
        # a Stop carries no descriptor: nothing to pair the one sent with
        assert ends.supervisor.send_fds([(Stop(1.0), a.fileno())])
        a.close()
        ends.supervisor.send(Ready(1))  # a later message still arrives
        await wait_for(lambda: ends.got, "the next message")
        assert ends.got == [(Ready(1), None)]
        b.settimeout(5)
        assert b.recv(1) == b""  # the worker's copy was closed, and ours: the far end sees EOF
    finally:
        ends.close()
        b.close()


async def test_requests_get_their_answers() -> None:
    def serve(name: str, args: tuple[Any, ...]) -> Any:
        if name == "fail":
            raise KeyError("x")
        return [name, *args]

    ends = Ends(serve)
    try:
        assert await ends.worker.request("store", "get", "k") == ["store", "get", "k"]
        with pytest.raises(LinkError, match="KeyError"):
            await ends.worker.request("fail")
    finally:
        ends.close()


async def test_a_closed_link_fails_its_requests() -> None:
    ends = Ends(lambda name, args: asyncio.sleep(60))
    try:
        pending = asyncio.ensure_future(ends.worker.request("slow"))
        await asyncio.sleep(0)
        ends.supervisor.close()
        with pytest.raises(LinkError):
            await pending
    finally:
        ends.close()


async def test_one_turn_handles_a_bounded_number_of_messages() -> None:
    """Packets of many hand-overs each must not let one turn of a worker's loop start
    thousands of sessions while its other sessions wait."""
    ends = Ends()
    a, b = socket.socketpair()
    try:
        batch = [
            (Handover(n, "192.0.2.1", 25, False, (), None, True), a.fileno()) for n in range(64)
        ]
        for _ in range(3):
            assert ends.supervisor.send_fds(batch)
        ends.worker._readable()  # one turn's reading, as the event loop calls it
        assert len(ends.got) == 64
        await wait_for(lambda: len(ends.got) == 3 * 64, "the rest in later turns")
    finally:
        ends.close()
        a.close()
        b.close()
