"""A small authoritative DNS server on 127.0.0.1 (UDP and TCP) for the RFC 7208 SPF suite.

dnsmasq serves the other DNS tests, but the suite needs what dnsmasq cannot express: a name
that never answers for some types and answers for others (a timeout), TXT records whose strings
are arbitrary bytes split where the test says, MX records with odd exchange names, and a new zone
for every one of its 203 cases without a restart. So this server answers from a zone the test
sets (`serve`), built on dnspython's wire format: NXDOMAIN for a name not in the zone, an empty
answer (NODATA) for a name in it without the type asked, CNAME chains followed as an
authoritative server does, silence for "TIMEOUT", and TC over UDP when an answer does not fit
(the client then asks over TCP).
"""

from __future__ import annotations

import contextlib
import socketserver
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rrset

from tests.support.dnsmasq import free_udp_port

TIMEOUT = "TIMEOUT"
"""A zone entry: a query of a type with no record before this entry gets no answer."""

TTL = 300


@dataclass(frozen=True)
class Record:
    rdtype: str
    value: Any
    """A/AAAA: address text; MX: (preference, exchange); PTR/CNAME: a name; TXT: the strings
    of one record (bytes); "TIMEOUT": no answer for this type."""


Entry = Record | str
Zone = dict[str, list[Entry]]


def _key(name: str | dns.name.Name) -> str:
    text = name.to_text() if isinstance(name, dns.name.Name) else name
    return text.rstrip(".").lower()


def _absolute(name: str) -> dns.name.Name:
    return dns.name.from_text(name.rstrip(".") + "." if name.strip(".") else ".")


def _rdata(rdtype: str, value: Any) -> dns.rdata.Rdata:
    if rdtype == "TXT":
        strings = [s[i : i + 255] for s in value for i in range(0, max(len(s), 1), 255)]
        return dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, strings)
    if rdtype == "MX":
        preference, exchange = value
        return dns.rdata.from_text(
            dns.rdataclass.IN, dns.rdatatype.MX, f"{int(preference)} {_absolute(exchange)}"
        )
    if rdtype in ("PTR", "CNAME"):
        return dns.rdata.from_text(dns.rdataclass.IN, rdtype, _absolute(value).to_text())
    return dns.rdata.from_text(dns.rdataclass.IN, rdtype, str(value))


@dataclass
class Lookup:
    """The outcome of one question against the zone."""

    rcode: int = dns.rcode.NOERROR
    answer: list[dns.rrset.RRset] = field(default_factory=list)
    silent: bool = False


def resolve(zone: Zone, qname: dns.name.Name, rdtype: str) -> Lookup:
    out = Lookup()
    name, seen = qname, set()
    for _ in range(16):
        key = _key(name)
        entries = zone.get(key)
        if entries is None:
            if not out.answer and not any(k.endswith("." + key) for k in zone):
                out.rcode = dns.rcode.NXDOMAIN
            return out
        records: list[Record] = []
        for entry in entries:
            if entry == TIMEOUT:
                if not records:
                    out.silent = True
                    return out
                break
            assert isinstance(entry, Record)
            if entry.rdtype == rdtype:
                if entry.value == TIMEOUT:
                    out.silent = True
                    return out
                records.append(entry)
        if records:
            out.answer.append(_rrset(name, rdtype, records))
            return out
        cnames = [e for e in entries if isinstance(e, Record) and e.rdtype == "CNAME"]
        if not cnames or rdtype == "CNAME" or key in seen:
            return out
        seen.add(key)
        out.answer.append(_rrset(name, "CNAME", cnames[:1]))
        name = _absolute(cnames[0].value)
    return out


def _rrset(name: dns.name.Name, rdtype: str, records: list[Record]) -> dns.rrset.RRset:
    rrset = dns.rrset.RRset(name, dns.rdataclass.IN, dns.rdatatype.from_text(rdtype))
    for record in records:
        rrset.add(_rdata(rdtype, record.value), TTL)
    return rrset


class ZoneServer:
    """Serves `zone` on 127.0.0.1:`port` over UDP and TCP until `close`."""

    def __init__(self) -> None:
        self.zone: Zone = {}
        self.queries = 0
        server = self

        class Udp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                reply = server.reply(data, udp=True)
                if reply is not None:
                    sock.sendto(reply, self.client_address)

        class Tcp(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                while True:
                    size = self.rfile.read(2)
                    if len(size) < 2:
                        return
                    data = self.rfile.read(int.from_bytes(size, "big"))
                    reply = server.reply(data, udp=False)
                    if reply is None:
                        return
                    self.wfile.write(len(reply).to_bytes(2, "big") + reply)

        for _ in range(20):
            self.port = free_udp_port()
            try:
                self._udp = socketserver.ThreadingUDPServer(("127.0.0.1", self.port), Udp)
            except OSError:
                continue
            try:
                self._tcp = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), Tcp)
            except OSError:
                self._udp.server_close()
                continue
            break
        else:
            raise OSError("no free port for the zone server")
        self._udp.daemon_threads = self._tcp.daemon_threads = True
        self._threads = [
            threading.Thread(target=s.serve_forever, args=(0.1,), daemon=True)
            for s in (self._udp, self._tcp)
        ]
        for t in self._threads:
            t.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def serve(self, zone: Zone) -> None:
        """Answer from `zone` from now on (names as dnspython writes them: a space is \\032)."""
        served: Zone = {}
        for name, entries in zone.items():
            try:
                served[_key(_absolute(name))] = entries
            except dns.exception.DNSException:
                continue  # a name that cannot be asked for (an over-long label)
        self.zone = served

    def reply(self, data: bytes, udp: bool) -> bytes | None:
        """The wire reply to one query; None to stay silent."""
        self.queries += 1
        try:
            query = dns.message.from_wire(data)
        except dns.exception.DNSException:
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return response.to_wire()
        question = query.question[0]
        try:
            found = resolve(self.zone, question.name, dns.rdatatype.to_text(question.rdtype))
        except (dns.exception.DNSException, ValueError) as err:
            raise AssertionError(f"zone record the server cannot encode: {err}") from err
        if found.silent:
            return None
        response.set_rcode(found.rcode)
        response.answer = found.answer
        limit = (query.payload if query.edns >= 0 else 512) if udp else 65535
        try:
            return response.to_wire(max_size=limit)
        except dns.exception.TooBig:
            response.answer = []
            response.flags |= dns.flags.TC
            return response.to_wire()

    def close(self) -> None:
        for s in (self._udp, self._tcp):
            s.shutdown()
            s.server_close()


@contextlib.contextmanager
def zone_server() -> Iterator[ZoneServer]:
    server = ZoneServer()
    try:
        yield server
    finally:
        server.close()
