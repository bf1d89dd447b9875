"""The Sendmail milter protocol, version 6, as Postfix and Sendmail speak it: sans-IO.

A packet is a 4-octet big-endian length (the command octet included), one command octet and
its data. `PacketReader` cuts a byte stream into packets with a hard bound on their length;
`decode` turns one packet into an immutable event; the `encode_*` functions make the milter's
answers. Nothing here touches a socket or decides policy. Every violation raises
`MilterError` with a short stable reason (the counter `milter.errors.<reason>`).

Reference: libmilter's mfdef.h (the codes and flag bits) and Postfix's milter8.c.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from mailmoat.smtp.replies import Reply, clean_text

VERSION = 6
"""The protocol version spoken (Postfix 2.6+ and Sendmail 8.14+)."""

# actions the milter may take (SMFIF_*)
ACT_ADDHDRS = 0x01
ACT_CHGHDRS = 0x10
ACT_SETSYMLIST = 0x100
"""The milter names the macros it wants per stage, after the three numbers of its answer."""

# protocol steps (SMFIP_*): NO* = do not send this step, NR_* = send it, expect no answer
P_NOEOH = 0x40
P_NOUNKNOWN = 0x100
P_NODATA = 0x200
P_RCPT_REJ = 0x800
P_NR_HDR = 0x80
P_NR_EOH = 0x40000
P_NR_BODY = 0x80000
P_HDR_LEADSPC = 0x100000

WANTED_ACTIONS = ACT_ADDHDRS | ACT_CHGHDRS | ACT_SETSYMLIST
WANTED_STEPS = P_NOUNKNOWN | P_NOEOH | P_RCPT_REJ | P_NR_HDR | P_NR_EOH | P_NR_BODY | P_HDR_LEADSPC
"""Asked for when the MTA offers them: rejected recipients too (harvest counting), headers
with their leading space (the bytes as sent, so DKIM verifies), no answers to headers, end of
headers and body chunks (a round trip saved each), no end of headers (the first body octets
or the end of the message ends them) and no unknown commands. `P_NODATA` is asked for too
when no check looks at DATA (a packet and an answer saved per message)."""

# macro stages (SMFIM_*) of the lists sent with SMFIF_SETSYMLIST
M_CONNECT, M_HELO, M_ENVFROM, M_ENVRCPT, M_DATA, M_EOM, M_EOH = range(7)

WANTED_MACROS = {
    M_CONNECT: "i",
    M_HELO: "i",
    M_ENVFROM: "i",
    M_ENVRCPT: "i {rcpt_host} {rcpt_mailer}",
    M_DATA: "i",
    M_EOM: "i",
    M_EOH: "i",
}
"""The macros read, asked for when the MTA offers SMFIF_SETSYMLIST in place of its defaults
(Postfix: the client's name and address, the daemon's, the sender's and recipient's
addresses and mailers, ...): the queue ID, and what says that the MTA refused a recipient
(SMFIP_RCPT_REJ). Every stage is named: Postfix takes an empty list as "the defaults". The
end-of-headers list is also the one sent before each header field, the end-of-message
list the one sent before each body chunk."""

_LEN = struct.Struct(">I")
_OPTNEG = struct.Struct(">III")


class MilterError(Exception):
    """The peer broke the protocol; the connection is closed. `reason`: a short token."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


# ---------------------------------------------------------------------------------- events
@dataclass(frozen=True, slots=True)
class OptNeg:
    version: int
    actions: int
    protocol: int


@dataclass(frozen=True, slots=True)
class Macros:
    stage: str
    """The command code these macros come before ("C", "H", "M", "R", "T", "L", "N", "E")."""
    values: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Connect:
    hostname: str
    family: str
    """"4", "6", "L" (a unix socket) or "U" (unknown, as for local submissions)."""
    port: int
    address: str


@dataclass(frozen=True, slots=True)
class HeloName:
    name: str


@dataclass(frozen=True, slots=True)
class Mail:
    args: tuple[str, ...]
    """The reverse path (in angle brackets, as the client sent it), then ESMTP parameters."""


@dataclass(frozen=True, slots=True)
class Rcpt:
    args: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Data:
    pass


@dataclass(frozen=True, slots=True)
class Header:
    name: bytes
    value: bytes


@dataclass(frozen=True, slots=True)
class EndOfHeaders:
    pass


@dataclass(frozen=True, slots=True)
class Body:
    chunk: bytes


@dataclass(frozen=True, slots=True)
class EndOfMessage:
    chunk: bytes


@dataclass(frozen=True, slots=True)
class Abort:
    pass


@dataclass(frozen=True, slots=True)
class Quit:
    pass


@dataclass(frozen=True, slots=True)
class QuitNewConnection:
    """Quit this SMTP connection's state; another one follows on the same milter socket."""


@dataclass(frozen=True, slots=True)
class Unknown:
    command: bytes


Event = (
    OptNeg
    | Macros
    | Connect
    | HeloName
    | Mail
    | Rcpt
    | Data
    | Header
    | EndOfHeaders
    | Body
    | EndOfMessage
    | Abort
    | Quit
    | QuitNewConnection
    | Unknown
)


# ---------------------------------------------------------------------------------- reading
class PacketReader:
    """Cuts received bytes into (command, data) packets; holds at most one packet and a
    header's worth of bytes more than `max_packet`."""

    __slots__ = ("_buf", "max_packet")

    def __init__(self, max_packet: int) -> None:
        self.max_packet = max_packet
        self._buf = bytearray()

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next_packet(self) -> tuple[bytes, bytes] | None:
        """The next whole packet, None until one is there. Raises MilterError for an empty
        or oversized one (at once, from its length, before its data has arrived)."""
        buf = self._buf
        if len(buf) < 4:
            return None
        (length,) = _LEN.unpack_from(buf)
        if length == 0:
            raise MilterError("empty_packet")
        if length > self.max_packet:
            raise MilterError("packet_too_big", f"{length} octets")
        if len(buf) < 4 + length:
            return None
        command = bytes(buf[4:5])
        data = bytes(buf[5 : 4 + length])
        del buf[: 4 + length]
        return command, data


def _strings(data: bytes, what: str) -> list[bytes]:
    """NUL-terminated strings; the data must end with a NUL."""
    if not data.endswith(b"\0"):
        raise MilterError("unterminated", what)
    return data[:-1].split(b"\0")


def _text(raw: bytes) -> str:
    # addresses may be UTF-8 (SMTPUTF8); anything else is kept, undecodable octets replaced
    return raw.decode("utf-8", "replace")


def _connect(data: bytes) -> Connect:
    end = data.find(b"\0")
    if end < 0 or end + 1 >= len(data):
        raise MilterError("bad_connect", "no family")
    hostname = _text(data[:end])
    family = chr(data[end + 1])
    rest = data[end + 2 :]
    if family == "U":
        if rest:
            raise MilterError("bad_connect", "data after an unknown family")
        return Connect(hostname, family, 0, "")
    if family not in "46L" or len(rest) < 3:
        raise MilterError("bad_connect", f"family {family!r}")
    (port,) = struct.unpack(">H", rest[:2])
    strings = _strings(rest[2:], "connect address")
    if len(strings) != 1:
        raise MilterError("bad_connect", "more than one address")
    return Connect(hostname, family, port, _text(strings[0]))


def _macros(data: bytes) -> Macros:
    # the most frequent packet (one before each step): decoded in one go, not name by name
    if not data:
        raise MilterError("bad_macro", "no stage")
    stage = chr(data[0])
    if len(data) == 1:
        return Macros(stage, ())
    if data[-1] != 0:
        raise MilterError("unterminated", "macros")
    parts = _text(data[1:-1]).split("\0")
    if len(parts) % 2:
        raise MilterError("bad_macro", "a name without a value")
    return Macros(stage, tuple(zip(parts[0::2], parts[1::2], strict=True)))


def _args(data: bytes, what: str) -> tuple[str, ...]:
    parts = _strings(data, what)
    if not parts[0]:
        raise MilterError("bad_" + what, "no address")
    return tuple(_text(p) for p in parts)


def _header(data: bytes) -> Header:
    parts = _strings(data, "header")
    if len(parts) != 2 or not parts[0]:
        raise MilterError("bad_header", "expected a name and a value")
    return Header(parts[0], parts[1])


def _no_data(event: Event, what: str) -> Callable[[bytes], Event]:
    def decode(data: bytes) -> Event:
        if data:
            raise MilterError("bad_" + what, "unexpected data")
        return event

    return decode


def _optneg(data: bytes) -> OptNeg:
    if len(data) < _OPTNEG.size:
        raise MilterError("bad_optneg", f"{len(data)} octets")
    version, actions, protocol = _OPTNEG.unpack_from(data)
    return OptNeg(version, actions, protocol)


def _helo(data: bytes) -> HeloName:
    parts = _strings(data, "helo")
    if len(parts) != 1:
        raise MilterError("bad_helo", "more than one name")
    return HeloName(_text(parts[0]))


_DECODERS: dict[bytes, Callable[[bytes], Event]] = {
    b"D": _macros,
    b"L": _header,
    b"B": Body,
    b"E": EndOfMessage,
    b"M": lambda data: Mail(_args(data, "mail")),
    b"R": lambda data: Rcpt(_args(data, "rcpt")),
    b"C": _connect,
    b"H": _helo,
    b"O": _optneg,
    b"T": _no_data(Data(), "data"),
    b"N": _no_data(EndOfHeaders(), "eoh"),
    b"A": _no_data(Abort(), "abort"),
    b"Q": _no_data(Quit(), "quit"),
    b"K": _no_data(QuitNewConnection(), "quit_nc"),
    b"U": lambda data: Unknown(data.rstrip(b"\0")),
}
"""By command octet, the most frequent first (one table look-up per packet)."""


def decode(command: bytes, data: bytes) -> Event:
    """One packet as an event; MilterError for an unknown command or malformed data."""
    decoder = _DECODERS.get(command)
    if decoder is None:
        raise MilterError("unknown_command", repr(command))
    return decoder(data)


# ---------------------------------------------------------------------------------- writing
def packet(command: bytes, data: bytes = b"") -> bytes:
    return _LEN.pack(len(data) + 1) + command + data


CONTINUE = packet(b"c")
ACCEPT = packet(b"a")
TEMPFAIL = packet(b"t")


def encode_optneg(actions: int, protocol: int, macros: dict[int, str] | None = None) -> bytes:
    """The answer to option negotiation; `macros`: the names wanted per SMFIM_* stage (only
    with ACT_SETSYMLIST in `actions`)."""
    lists = b"".join(
        _LEN.pack(stage) + names.encode("ascii") + b"\0" for stage, names in (macros or {}).items()
    )
    return packet(b"O", _OPTNEG.pack(VERSION, actions, protocol) + lists)


def encode_reply(answer: Reply) -> bytes:
    """SMFIR_REPLYCODE: the MTA gives the client this reply. Only 4xx and 5xx replies can be
    given; a `%` is doubled (the MTA reads the text as a format); the lines are joined into
    one (the MTA would otherwise take them as its own multi-line format)."""
    if answer.code < 400:
        raise ValueError(f"a milter can only reply with 4xx or 5xx, not {answer.code}")
    enhanced = f" {answer.enhanced}" if answer.enhanced else ""
    text = clean_text(answer.text).replace("%", "%%")
    return packet(b"y", f"{answer.code}{enhanced} {text}".encode("ascii") + b"\0")


def _header_value(value: bytes) -> bytes:
    # a folded value is sent with bare LF line breaks (the MTA's own form): CR would be kept
    if b"\0" in value:
        raise ValueError("a NUL in a header value")
    return value.replace(b"\r\n", b"\n")


def encode_insert_header(index: int, name: bytes, value: bytes) -> bytes:
    """SMFIR_INSHEADER: insert the field at `index` (0: before every other field)."""
    return packet(b"i", struct.pack(">I", index) + name + b"\0" + _header_value(value) + b"\0")


def encode_delete_header(index: int, name: bytes) -> bytes:
    """SMFIR_CHGHEADER with an empty value: delete the `index`th (from 1) field `name`."""
    return packet(b"m", struct.pack(">I", index) + name + b"\0\0")
