"""A small authoritative DNS server on 127.0.0.1 (UDP and TCP) answering from an in-memory
zone (tests/support/dns_records.py) that the test sets (`serve`), without a restart.

For the DNS paths a test wants over real sockets with records dnsmasq cannot express (TXT
strings split where the test says, odd MX exchange names, a timeout for one type only). On
top of the zone's answers it sets TC over UDP when an answer does not fit, so the client asks
again over TCP. The same zones are served in process, socket-free, by tests/support/fake_dns.py.
"""

from __future__ import annotations

import contextlib
import socketserver
import threading
from collections.abc import Iterator

import dns.exception
import dns.flags
import dns.message

from tests.support.dns_records import Zone, respond, served
from tests.support.ports import free_udp_port


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
        self.zone = served(zone)

    def reply(self, data: bytes, udp: bool) -> bytes | None:
        """The wire reply to one query; None to stay silent."""
        self.queries += 1
        try:
            query = dns.message.from_wire(data)
        except dns.exception.DNSException:
            return None
        response = respond(self.zone, query)
        if response is None:
            return None
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
