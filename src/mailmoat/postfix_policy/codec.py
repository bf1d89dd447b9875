"""The Postfix policy delegation protocol (SMTPD_POLICY_README) as bytes in, requests out.

A request is `name=value` lines, each ended by a newline, and an empty line that ends the
request; the answer is `action=...` and an empty line. A connection carries many requests, one
after the other. Sans-IO: no sockets and no clock, so it is fuzzed directly.

Every bound is enforced while reading (a line, the attributes of a request, the octets of a
request), and every violation raises `PolicyProtocolError` with a short reason token for the
counters; after one, the reader refuses everything (the connection is to be closed: there is no
way to find the start of the next request in a broken stream).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailmoat.limits import POLICY_MAX_ATTRIBUTES, POLICY_MAX_LINE, POLICY_MAX_REQUEST

_NAME = re.compile(rb"[A-Za-z0-9_.-]{1,64}")
_ACTION = re.compile(r"[\x20-\x7e]{1,500}")


class PolicyProtocolError(Exception):
    """The peer broke the protocol; `reason` is a short token (`policy.malformed.<reason>`)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class PolicyLimits:
    max_line: int = POLICY_MAX_LINE
    max_attributes: int = POLICY_MAX_ATTRIBUTES
    max_request: int = POLICY_MAX_REQUEST


Request = dict[str, str]


class RequestReader:
    """Collects requests from the bytes a peer sends."""

    def __init__(self, limits: PolicyLimits = PolicyLimits()) -> None:
        self.limits = limits
        self._buffer = bytearray()
        self._attributes: Request = {}
        self._size = 0  # octets of the request being read, lines already taken
        self._broken: PolicyProtocolError | None = None

    @property
    def pending(self) -> bool:
        """Part of a request has arrived (a peer that stops here is stuck mid-request)."""
        return bool(self._buffer or self._attributes)

    def feed(self, data: bytes) -> list[Request]:
        """The requests that `data` completes, in order. Raises PolicyProtocolError."""
        if self._broken is not None:
            raise self._broken
        try:
            return self._feed(data)
        except PolicyProtocolError as err:
            self._broken = err
            self._buffer.clear()
            self._attributes = {}
            raise

    def _feed(self, data: bytes) -> list[Request]:
        self._buffer += data
        out: list[Request] = []
        start = 0
        buf = self._buffer
        lim = self.limits
        while True:
            end = buf.find(b"\n", start)
            if end < 0:
                rest = len(buf) - start
                if rest >= lim.max_line:
                    raise PolicyProtocolError("line_too_long", f"over {lim.max_line} octets")
                if self._size + rest >= lim.max_request:
                    raise PolicyProtocolError("request_too_large", f"over {lim.max_request}")
                break
            line = bytes(buf[start:end])
            start = end + 1
            if len(line) + 1 > lim.max_line:
                raise PolicyProtocolError("line_too_long", f"over {lim.max_line} octets")
            self._size += len(line) + 1
            if self._size > lim.max_request:
                raise PolicyProtocolError("request_too_large", f"over {lim.max_request} octets")
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if not self._attributes:
                    raise PolicyProtocolError("empty_request")
                out.append(self._attributes)
                self._attributes = {}
                self._size = 0
                continue
            self._attribute(line)
        del buf[:start]
        return out

    def _attribute(self, line: bytes) -> None:
        name, eq, value = line.partition(b"=")
        if not eq or _NAME.fullmatch(name) is None:
            raise PolicyProtocolError("malformed_line", repr(line[:40]))
        if b"\0" in value or b"\r" in value:
            raise PolicyProtocolError("malformed_line", "control character in a value")
        key = name.decode("ascii").lower()
        if key in self._attributes:
            raise PolicyProtocolError("duplicate_attribute", key)
        if len(self._attributes) >= self.limits.max_attributes:
            raise PolicyProtocolError("too_many_attributes", f"over {self.limits.max_attributes}")
        # Postfix passes what the SMTP client said; a value that is not UTF-8 is kept readable
        self._attributes[key] = value.decode("utf-8", errors="replace")


def encode_action(action: str) -> bytes:
    """The answer to one request. `action` is one line of printable ASCII (ValueError else)."""
    if _ACTION.fullmatch(action) is None:
        raise ValueError(f"not a policy action: {action!r}")
    return b"action=" + action.encode("ascii") + b"\n\n"
