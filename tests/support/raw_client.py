"""Shared pieces for the real-peer integration tests: a raw SMTP socket client, reply parsing,
mailmoat's trace header, and reading a peer's log from a given point on."""

from __future__ import annotations

import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.ports import LOOPBACK

_MAILMOAT_RECEIVED = re.compile(
    rb"\AReceived: from [^\r\n]*\r?\n\tby mx\.mailmoat\.test \(mailmoat\) with (?P<proto>\w+) "
    rb"id (?P<qid>[0-9A-F]+)[^\r\n]*\r?\n(?:\t[^\r\n]*\r?\n)*"
)


def split_mailmoat_received(content: bytes) -> tuple[bytes, bytes]:
    """(mailmoat's Received: header, the rest) of a message as the downstream got it.

    Fails the test if the content does not start with exactly one header written by the test
    gateway (server.hostname mx.mailmoat.test). Works with CRLF and with LF line ends.
    """
    m = _MAILMOAT_RECEIVED.match(content)
    assert m is not None, f"no mailmoat Received: header at the top of {content[:300]!r}"
    return m.group(), content[m.end() :]


def mailmoat_queue_id(content: bytes) -> str:
    m = _MAILMOAT_RECEIVED.match(content)
    assert m is not None, content[:300]
    return m.group("qid").decode()


@dataclass(frozen=True)
class Reply:
    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(self.lines)

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


class RawClient:
    """A blocking SMTP client on a plain socket that sends exactly the bytes it is given.

    Every wait is bounded by ``timeout``; a missing reply fails the test with what was read.
    """

    def __init__(self, port: int, timeout: float = 10.0, host: str = LOOPBACK) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.timeout = timeout
        self.buf = b""
        self.closed = False

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self, deadline: float) -> bool:
        """Read more; False at end of stream."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no complete reply within {self.timeout}s; got {self.buf!r}")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            raise AssertionError(
                f"no complete reply within {self.timeout}s; got {self.buf!r}"
            ) from None
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.closed = True
            return False
        self.buf += chunk
        return True

    def reply(self) -> Reply | None:
        """The next complete (possibly multi-line) reply, or None if the server closed first."""
        deadline = time.monotonic() + self.timeout
        lines: list[str] = []
        while True:
            while b"\r\n" not in self.buf:
                if self.closed or not self._fill(deadline):
                    assert not self.buf, f"connection closed inside a reply: {self.buf!r}"
                    return None
            raw, self.buf = self.buf.split(b"\r\n", 1)
            line = raw.decode("utf-8", "replace")
            assert re.match(r"^[2-5]\d\d[ -]", line + " "), f"not an SMTP reply line: {line!r}"
            lines.append(line[4:])
            if line[3:4] != "-":
                return Reply(int(line[:3]), tuple(lines))

    def expect(self, code: int) -> Reply:
        r = self.reply()
        assert r is not None and r.code == code, f"expected {code}, got {r}"
        return r

    def command(self, line: bytes) -> Reply:
        self.send(line)
        r = self.reply()
        assert r is not None, f"connection closed after {line!r}"
        return r

    def replies_until_closed(self) -> list[Reply]:
        """Every reply until the server closes the connection (bounded by ``timeout``)."""
        got: list[Reply] = []
        while (r := self.reply()) is not None:
            got.append(r)
        return got


class LogWatcher:
    """Read a peer's log from the moment the watcher was made (a file that only grows)."""

    def __init__(self, read) -> None:
        self._read = read
        self._start = len(read())

    def text(self) -> str:
        return self._read()[self._start :]


def self_signed_cert(folder: Path, names: tuple[str, ...] = ("127.0.0.1",)) -> tuple[Path, Path]:
    """A self-signed EC certificate and key (PEM files in ``folder``) valid for ``names``
    (IP addresses or DNS names); the certificate is its own CA."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    sans: list[x509.GeneralName] = []
    for name in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            sans.append(x509.DNSName(name))
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path
