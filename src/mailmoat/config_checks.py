"""Checks of setting values that pydantic's types and bounds do not express (issue 10 item 11).

Kept apart from `config.py` so the settings model stays a list of fields: names that go on the
wire or into a header (a strict grammar: a CR/LF in `relay.helo_name` would inject commands
downstream), relay networks that would open the relay to the Internet, the bounded reading of
a configuration file, and the files a setting names (exist, readable, a certificate that
matches its key). Each check raises ValueError with one line, or returns (key, reason) pairs.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import ssl
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from mailmoat.limits import (
    MAX_CONFIG_FILE,
    MAX_INT,
    MAX_PEM_FILE,
    MAX_SECONDS,
    MIN_PUBLIC_PREFIX,
    MIN_TIMEOUT,
)

_LDH_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)\Z")


def hostname(value: str) -> str:
    """A host name as it goes into a greeting, EHLO or a header: ASCII letters, digits and
    hyphens in dot-separated labels of 1 to 63, 253 octets at most, no trailing dot."""
    if not value or len(value) > 253:
        raise ValueError(f"not a host name (1 to 253 characters): {value!r}")
    for label in value.split("."):
        if not _LDH_LABEL.match(label):
            raise ValueError(
                f"not a host name (letters, digits, '-' in dot-separated labels): {value!r}"
            )
    return value


_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_MAILBOX = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9.-]+\Z")


def mailbox(value: str) -> bool:
    """An ASCII dot-atom address whose domain is a host name (the call-ahead probe sender)."""
    if not _MAILBOX.match(value):
        return False
    try:
        hostname(value.rpartition("@")[2])
    except ValueError:
        return False
    return True


def domain_name(value: str) -> str:
    """A mail domain as listed in domains.local: like `hostname`, but a label may also hold
    printable non-ASCII characters (a U-label is a different name from its A-label: list
    both to accept both). Lower-cased, a trailing dot removed."""
    name = value.strip().lower().rstrip(".")
    if not name or len(name.encode()) > 253:
        raise ValueError(f"not a domain name: {value!r}")
    for label in name.split("."):
        ascii_part = "".join(c if c.isascii() else "a" for c in label)
        if not _LDH_LABEL.match(ascii_part) or not label.isprintable():
            raise ValueError(f"not a domain name: {value!r}")
    return name


# Private and local space: a relay network wider than /16 (IPv4) or /32 (IPv6) must lie inside
# one of these, so that no setting can let the Internet relay through the gateway.
_LOCAL_SPACE = tuple(
    ipaddress.ip_network(n)
    for n in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "fc00::/7",
        "fe80::/10",
        "::1/128",
    )
)


# IPv6 prefixes that carry IPv4 addresses, and the bit where the IPv4 address starts: Teredo
# (the client's address, obfuscated, in the last 32 bits), NAT64's well-known and local-use
# prefixes (RFC 6052, RFC 8215) and 6to4. A network inside one is as wide as the IPv4 network
# it embeds: 2001::/32 or 64:ff9b::/96 stand for the whole IPv4 Internet.
_V4_EMBEDDING = tuple(
    (ipaddress.IPv6Network(n), offset)
    for n, offset in (
        ("2001::/32", 96),
        ("64:ff9b::/96", 96),
        ("64:ff9b:1::/48", 48),
        ("2002::/16", 16),
    )
)


MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
"""IPv4-mapped IPv6 addresses: a client with one is known by its IPv4 address."""


def plain_network(
    net: ipaddress.IPv4Network | ipaddress.IPv6Network,
) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """An IPv4-mapped network (::ffff:198.51.0.0/112) as the IPv4 network it is, since
    clients are matched by their IPv4 address; any other network as it is."""
    if isinstance(net, ipaddress.IPv6Network) and net.subnet_of(MAPPED):
        mapped = ipaddress.IPv4Address(int(net.network_address) & 0xFFFFFFFF)
        return ipaddress.IPv4Network((mapped, net.prefixlen - 96))
    return net


def _too_wide(value: str) -> bool:
    net = ipaddress.ip_network(value, strict=False)
    if isinstance(net, ipaddress.IPv6Network) and any(
        net.overlaps(prefix) and net.prefixlen - offset < MIN_PUBLIC_PREFIX[4]
        for prefix, offset in _V4_EMBEDDING
    ):
        return True
    return net.prefixlen < MIN_PUBLIC_PREFIX[net.version] and not any(
        net.version == s.version and net.subnet_of(s)  # type: ignore[arg-type]
        for s in _LOCAL_SPACE
    )


def relay_network(value: str) -> str:
    """A network allowed to relay: refused when wider than /16 (IPv4) or /32 (IPv6) outside
    private and local space, since that would make an open relay (0.0.0.0/0, ::/0, 2000::/3).
    (An IPv4-mapped network is read as its IPv4 one first: ::ffff:0:0/96 is 0.0.0.0/0.)"""
    if _too_wide(value):
        raise ValueError(
            f"{value} covers public addresses wider than /16 (IPv4) or /32 (IPv6): an open relay"
        )
    return value


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(k)
            yield from _strings(v)


def value_problem(value: Any) -> str | None:
    """What is wrong with any setting value, whatever its field: a non-printing character in
    a string (CR, LF, NUL, U+2028, ...), a float that is not finite or beyond `MAX_SECONDS`,
    an integer beyond `MAX_INT`."""
    if isinstance(value, int) and not isinstance(value, bool):
        return f"must be at most {MAX_INT}" if abs(value) > MAX_INT else None
    if isinstance(value, float):
        if not math.isfinite(value):
            return "must be a finite number"
        if abs(value) > MAX_SECONDS:
            return f"must be at most {MAX_SECONDS:.0f} (one year)"
        return None
    for s in _strings(value):
        if not s.isprintable():
            return f"contains a control or non-printing character: {s!r}"
    return None


def read_config_file(path: Path) -> bytes:
    """The file's content, at most MAX_CONFIG_FILE octets; OSError or ValueError with the
    reason. Only a regular file is read (a FIFO or device would block or never end)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError("not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(MAX_CONFIG_FILE + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_CONFIG_FILE:
        raise ValueError(f"larger than {MAX_CONFIG_FILE} octets")
    return data


def _readable(path: Path, max_size: int | None = MAX_PEM_FILE) -> str | None:
    """Why `path` cannot be used as a file of settings: missing, unreadable, not a regular
    file (a device or FIFO could block or never end), larger than `max_size`."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as err:
        return f"cannot read {path}: {err.strerror or err}"
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(st.st_mode) or _pseudo(path):
        return f"{path} is not a regular file"
    if max_size is not None and st.st_size > max_size:
        return f"{path} is larger than {max_size} octets"
    return None


_PSEUDO_FILESYSTEMS = ("/proc", "/sys", "/dev")
"""Where a "regular" file is the kernel's (/proc/self/mem: reading it faults or never ends)."""


def _pseudo(path: Path) -> bool:
    real = os.path.realpath(path)
    return any(real == top or real.startswith(top + "/") for top in _PSEUDO_FILESYSTEMS)


def _redis_tls_problems(url: str) -> list[tuple[str, str]]:
    """The files a `rediss://` store.url names (`ssl_ca_certs`, `ssl_certfile`, `ssl_keyfile`
    in its query): one line for the first that cannot be used."""
    if not url.startswith("rediss://"):
        return []
    query = parse_qs(urlsplit(url).query)
    for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
        for value in query.get(name, []):
            if problem := _readable(Path(value)):
                return [("store.url", f"{name}: {problem}")]
    for ca in query.get("ssl_ca_certs", []):
        try:
            ssl.create_default_context(cafile=ca)
        except ssl.SSLError as err:
            return [("store.url", f"ssl_ca_certs: no usable CA certificate in {ca}: {err}")]
    return []


def file_problems(settings: Any) -> list[tuple[str, str]]:
    """(key, reason) for each file a setting names that cannot be used: missing, unreadable,
    not PEM, a certificate that does not match its key. `settings` is a config.Settings."""
    out: list[tuple[str, str]] = []
    server = settings.server
    if server.tls_key is not None and server.tls_cert is None:
        out.append(("server.tls_key", "set without server.tls_cert"))
    if server.tls_cert is not None:
        bad = [(k, r) for k, p in _tls_files(server) if (r := _readable(p))]
        out += bad or _tls_pair(server.tls_cert, server.tls_key)
    for key, path in (
        ("relay.tls_ca_file", settings.relay.tls_ca_file),
        ("ldap.tls_ca_file", settings.ldap.tls_ca_file),
    ):
        if path is None:
            continue
        if problem := _readable(path):
            out.append((key, problem))
            continue
        try:
            ssl.create_default_context(cafile=str(path))
        except ssl.SSLError as err:
            out.append((key, f"no usable CA certificate in {path}: {err.reason or err}"))
    if settings.store.backend == "redis":
        out += _redis_tls_problems(settings.store.url)
    # the static file may be large (directory.max_entries bounds what is kept of it)
    for key, path, limit in (
        ("directory.static_file", settings.directory.static_file, None),
        ("ldap.bind_password_file", settings.ldap.bind_password_file, MAX_PEM_FILE),
    ):
        if path is not None and (problem := _readable(path, limit)):
            out.append((key, problem))
    if settings.relay.downstream is None and not writable_dir(Path(settings.maildir.path)):
        out.append(
            ("maildir.path", f"{settings.maildir.path} is not a folder mailmoat can write or make")
        )
    token = settings.admin.token_file
    if token is not None:
        if problem := _readable(token):
            out.append(("admin.token_file", problem))
        elif len(admin_token(token)) < 16:
            out.append(
                (
                    "admin.token_file",
                    f"the first line of {token} must hold a token of 16+ characters",
                )
            )
        elif (mode := os.stat(token).st_mode) & 0o077:
            out.append(
                (
                    "admin.token_file",
                    f"{token} is readable or writable by others (mode {mode & 0o777:o});"
                    f" chmod 600 it",
                )
            )
    users = settings.console.users_file
    if settings.console.listen and users is not None:
        from mailmoat.console.users import UsersError, load

        try:
            load(users)
        except UsersError as err:
            out.append(("console.users_file", str(err)))
    audit = settings.console.audit_log
    if settings.console.listen and audit is not None and (problem := _appendable(audit)):
        out.append(("console.audit_log", problem))
    return out + setting_problems(settings)


def _exemption_problems(settings: Any) -> list[tuple[str, str]]:
    """The width rule of domains.relay_networks, for every list that exempts or trusts
    clients: an exemption, a proxy allowed to name the client's address, a peer allowed to
    name clients to the milter or the policy service."""
    out = []
    exempt = "it would exempt the Internet"
    trust = "it would let the Internet name any client address"
    for key, networks, why in (
        ("admission.allow_networks", settings.admission.allow_networks, exempt),
        ("harvest.exempt_networks", settings.harvest.exempt_networks, exempt),
        ("score.exempt_networks", settings.score.exempt_networks, exempt),
        ("server.proxy_protocol", settings.server.proxy_protocol, trust),
        ("milter.clients", settings.milter.clients, trust),
        ("policy.clients", settings.policy.clients, trust),
    ):
        for n in networks:
            if _too_wide(n):
                out.append(
                    (key, f"{n} covers public addresses wider than /16 (IPv4) or /32 (IPv6): {why}")
                )
    return out


def _endpoint(value: str) -> tuple[str, int] | None:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]").lower(), int(port)


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return ipaddress.ip_address("127.0.0.1") if host == "localhost" else None


def _same_endpoint(listen: tuple[str, int], target: tuple[str, int]) -> bool:
    """`target` reaches the listener `listen` (the same address, or a wildcard listener and
    a loopback target), same port."""
    if listen[1] != target[1] or listen[1] == 0:
        return False
    mine, theirs = _ip(listen[0]), _ip(target[0])
    if mine is None or theirs is None:
        return listen[0] == target[0]
    return mine == theirs or (mine.is_unspecified and (theirs.is_loopback or theirs == mine))


def _endpoint_problems(settings: Any) -> list[tuple[str, str]]:
    out = []
    listens = [(v, e) for v in settings.server.listen if (e := _endpoint(v)) is not None]
    seen: dict[tuple[str, int], str] = {}
    for value, (host, port) in listens:
        ip = _ip(host)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            out.append(
                (
                    "server.listen",
                    f"{value} is an IPv4-mapped IPv6 address, which cannot be bound:"
                    f" write {ip.ipv4_mapped}:{port}",
                )
            )
        bound = (str(ip) if ip is not None else host, port)
        if port and bound in seen:
            out.append(("server.listen", f"{value} is listed twice (as {seen[bound]})"))
        seen.setdefault(bound, value)
    admin = settings.admin.listen
    policy = settings.policy.listen
    admin_at = _endpoint(admin) if admin and not admin.startswith("/") else None
    others: tuple[tuple[str, str | None], ...] = (
        ("relay.downstream", settings.relay.downstream),
        ("callahead.server", settings.callahead.server),
        ("admin.listen", admin if admin_at else None),
        ("policy.listen", None if policy.startswith("/") else policy),
    )
    for key, value in others:
        target = _endpoint(value) if value else None
        if target is None:
            continue
        for listen, at in listens:
            if _same_endpoint(at, target) or _same_endpoint(target, at):
                loop = key not in ("admin.listen", "policy.listen")
                why = "a mail loop" if loop else "the port is taken"
                out.append((key, f"{value} is the gateway's own server.listen {listen}: {why}"))
                break
    return out


def setting_problems(settings: Any) -> list[tuple[str, str]]:
    """(key, reason) for settings that are valid alone but wrong for a gateway on the
    Internet or together: exemptions covering the Internet, listen addresses that cannot be
    bound or are listed twice, delivery to the gateway itself, timeouts too short for any
    client, a longest ban shorter than the first."""
    out = _exemption_problems(settings) + _endpoint_problems(settings)
    for name in ("greeting", "command", "data", "session"):
        if getattr(settings.timeouts, name) < MIN_TIMEOUT:
            out.append((f"timeouts.{name}", f"must be at least {MIN_TIMEOUT:g} second"))
    bans = settings.bans
    if bans.max_duration < bans.duration:
        out.append(
            (
                "bans.max_duration",
                f"{bans.max_duration:g} is shorter than bans.duration ({bans.duration:g})",
            )
        )
    return out


def _appendable(path: Path) -> str | None:
    """Why lines cannot be appended to `path` (made if missing, in a folder that exists)."""
    if path.exists():
        if not path.is_file() or not os.access(path, os.W_OK):
            return f"{path} is not a file mailmoat can append to"
        return None
    folder = path.absolute().parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        return f"{folder} is not a folder mailmoat can write {path.name} in"
    return None


def writable_dir(path: Path) -> bool:
    """`path` is a writable folder, or can be made: its nearest existing ancestor is one."""
    if path.exists():
        return path.is_dir() and os.access(path, os.W_OK | os.X_OK)
    parent = path.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    return parent.is_dir() and os.access(parent, os.W_OK | os.X_OK)


def admin_token(path: Path) -> str:
    """The bearer token in `admin.token_file`: its first line, stripped."""
    lines = Path(path).read_text(errors="replace").splitlines()
    return lines[0].strip() if lines else ""


def _no_password() -> bytes:
    raise ssl.SSLError("the private key asks for a pass phrase (not supported)")


def _tls_pair(cert: Path, key: Path | None) -> list[tuple[str, str]]:
    """Problems of a readable certificate file and key file (the key may be in the cert)."""
    if b"-----BEGIN CERTIFICATE-----" not in Path(cert).read_bytes():
        return [("server.tls_cert", f"no PEM certificate in {cert}")]
    key_key, key_path = ("server.tls_key", key) if key else ("server.tls_cert", cert)
    key_pem = Path(key_path).read_bytes()
    if b"PRIVATE KEY-----" not in key_pem:
        return [(key_key, f"no PEM private key in {key_path}")]
    if b"ENCRYPTED" in key_pem:  # OpenSSL would ask for a pass phrase on the terminal
        return [(key_key, f"{key_path} holds an encrypted private key (not supported)")]
    try:
        # a password callback keeps OpenSSL from ever prompting on the terminal
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key, password=_no_password)
    except ssl.SSLError as err:
        what = "do not match" if "KEY_VALUES_MISMATCH" in str(err) else "cannot be used"
        return [("server.tls_cert", f"certificate and key {what}: {err.reason or err}")]
    except OSError as err:  # not OpenSSL's: the file went away or became unreadable
        return [("server.tls_cert", f"certificate and key cannot be used: {err.strerror or err}")]
    return []


def _tls_files(server: Any) -> list[tuple[str, Path]]:
    files = [("server.tls_cert", server.tls_cert)]
    if server.tls_key is not None:
        files.append(("server.tls_key", server.tls_key))
    return files
