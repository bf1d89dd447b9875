"""The MTA's side of the milter protocol, packet by packet, for tests and bench/milter.py: what
Postfix sends (option negotiation offering everything, macros, connect, ...) and the milter's
answers read back as (command, data)."""

from __future__ import annotations

import asyncio
import contextlib
import struct

from mailmoat.milter.codec import packet

ALL_ACTIONS = 0x1FF
ALL_STEPS = 0x1FFFFF


def optneg(version: int = 6, actions: int = ALL_ACTIONS, steps: int = ALL_STEPS) -> bytes:
    return packet(b"O", struct.pack(">III", version, actions, steps))


def macros(stage: bytes, **values: str) -> bytes:
    data = b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in values.items())
    return packet(b"D", stage + data)


def connect(address: str, port: int = 40000, hostname: str = "client.test") -> bytes:
    family = b"6" if ":" in address else b"4"
    return packet(
        b"C",
        hostname.encode() + b"\0" + family + struct.pack(">H", port) + address.encode() + b"\0",
    )


def strings(command: bytes, *args: str | bytes) -> bytes:
    return packet(
        command, b"".join((a if isinstance(a, bytes) else a.encode()) + b"\0" for a in args)
    )


def header(name: str, value: str | bytes) -> bytes:
    return strings(b"L", name, value)


def macro_lists(data: bytes) -> dict[int, str]:
    """The macro lists after the three numbers of an option negotiation answer (as Postfix's
    milter8.c reads them: a 4-octet stage, then the names up to a NUL)."""
    lists: dict[int, str] = {}
    while data:
        (stage,) = struct.unpack_from(">I", data)
        names, nul, data = data[4:].partition(b"\0")
        assert nul, "a macro list without its NUL"
        lists[stage] = names.decode("ascii")
    return lists


class MilterPeer:
    """One connection to a milter, as the MTA."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int, source: str | None = None) -> MilterPeer:
        """Connect to 127.0.0.1:`port`, from the loopback address `source` if given."""
        local = (source, 0) if source is not None else None
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=local)
        return cls(reader, writer)

    async def send(self, *packets: bytes) -> None:
        self.writer.write(b"".join(packets))
        await self.writer.drain()

    async def answer(self, timeout: float = 30.0) -> tuple[bytes, bytes]:
        """The next packet from the milter."""
        async with asyncio.timeout(timeout):
            (length,) = struct.unpack(">I", await self.reader.readexactly(4))
            body = await self.reader.readexactly(length)
        return body[:1], body[1:]

    async def ask(self, *packets: bytes) -> tuple[bytes, bytes]:
        await self.send(*packets)
        return await self.answer()

    async def negotiate(
        self, steps: int = ALL_STEPS, actions: int = ALL_ACTIONS
    ) -> tuple[int, int]:
        """Option negotiation; the (actions, steps) the milter asked for."""
        return (await self.negotiation(steps, actions))[:2]

    async def negotiation(
        self, steps: int = ALL_STEPS, actions: int = ALL_ACTIONS
    ) -> tuple[int, int, dict[int, str]]:
        """Option negotiation; the (actions, steps, macro names by SMFIM_* stage) the milter
        asked for."""
        command, data = await self.ask(optneg(actions=actions, steps=steps))
        assert command == b"O", (command, data)
        _version, wanted, protocol = struct.unpack_from(">III", data)
        return wanted, protocol, macro_lists(data[12:])

    async def closed(self, timeout: float = 10.0) -> bool:
        """True once the milter has closed the connection."""
        try:
            async with asyncio.timeout(timeout):
                return await self.reader.read(1) == b""
        except (TimeoutError, ConnectionError):
            return False

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()
