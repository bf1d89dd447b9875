"""An in-memory DNS zone and the authoritative answer to a query from it.

Served over UDP and TCP by zone_server.py and in process, without a socket, by fake_dns.py. The
answer is what an authoritative server gives: NXDOMAIN for a name not in the zone, an empty
answer (NODATA) for a name in it without the type asked, CNAME chains followed, silence for
"TIMEOUT", and REFUSED for a name outside the domains served (when they are given: the private
dnsmasq of the other tests has no upstream and refuses such names). `from_dnsmasq` reads the
dnsmasq option lines of tests/support/dns_zone.py, so one description of the test world serves
both the real dnsmasq and the in-process zone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import ip_address
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


def resolve(zone: Zone, qname: dns.name.Name, rdtype: str, ttl: int = TTL) -> Lookup:
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
            out.answer.append(_rrset(name, rdtype, records, ttl))
            return out
        cnames = [e for e in entries if isinstance(e, Record) and e.rdtype == "CNAME"]
        if not cnames or rdtype == "CNAME" or key in seen:
            return out
        seen.add(key)
        out.answer.append(_rrset(name, "CNAME", cnames[:1], ttl))
        name = _absolute(cnames[0].value)
    return out


def _rrset(name: dns.name.Name, rdtype: str, records: list[Record], ttl: int) -> dns.rrset.RRset:
    rrset = dns.rrset.RRset(name, dns.rdataclass.IN, dns.rdatatype.from_text(rdtype))
    for record in records:
        rrset.add(_rdata(rdtype, record.value), ttl)
    return rrset


def served(zone: Zone) -> Zone:
    """`zone` with its names as a server looks them up (names as dnspython writes them: a
    space is \\032); a name that cannot be asked for (an over-long label) is left out."""
    out: Zone = {}
    for name, entries in zone.items():
        try:
            out[_key(_absolute(name))] = entries
        except dns.exception.DNSException:
            continue
    return out


def respond(
    zone: Zone,
    query: dns.message.Message,
    ttl: int = TTL,
    domains: Iterable[str] | None = None,
) -> dns.message.Message | None:
    """The authoritative response to `query` from a `served` zone; None to stay silent.
    With `domains`, a name outside all of them is REFUSED."""
    response = dns.message.make_response(query)
    response.flags |= dns.flags.AA
    if len(query.question) != 1:
        response.set_rcode(dns.rcode.FORMERR)
        return response
    question = query.question[0]
    if domains is not None:
        key = _key(question.name)
        if not any(key == d or key.endswith("." + d) for d in domains):
            response.flags &= ~dns.flags.AA
            response.set_rcode(dns.rcode.REFUSED)
            return response
    try:
        found = resolve(zone, question.name, dns.rdatatype.to_text(question.rdtype), ttl)
    except (dns.exception.DNSException, ValueError) as err:
        raise AssertionError(f"zone record the server cannot encode: {err}") from err
    if found.silent:
        return None
    response.set_rcode(found.rcode)
    response.answer = found.answer
    return response


# --- the test world's dnsmasq lines as a zone ------------------------------------------------

_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')


def from_dnsmasq(lines: Iterable[str]) -> Zone:
    """The zone that dnsmasq serves for these option lines (the kinds tests/support/dns_zone.py
    and the tests use; any other raises): host-record (A/AAAA and the PTR), ptr-record, cname,
    mx-host, txt-record (quoted strings) and address=/name/ip (an A or AAAA for name)."""
    zone: Zone = {}

    def add(name: str, rdtype: str, value: Any) -> None:
        zone.setdefault(name.rstrip(".").lower(), []).append(Record(rdtype, value))

    for line in lines:
        option, _, value = line.partition("=")
        if option == "host-record":
            *names, last = value.split(",")
            addresses = [last]
            while names and _is_address(names[-1]):
                addresses.insert(0, names.pop())
            for address in addresses:
                kind = "AAAA" if ":" in address else "A"
                for name in names:
                    add(name, kind, address)
                add(ip_address(address).reverse_pointer, "PTR", names[0])
        elif option == "ptr-record":
            name, target = value.split(",")
            add(name, "PTR", target)
        elif option == "cname":
            alias, target = value.split(",")
            add(alias, "CNAME", target)
        elif option == "mx-host":
            name, exchange, preference = value.split(",")
            add(name, "MX", (int(preference), exchange))
        elif option == "txt-record":
            name, _, strings = value.partition(",")
            add(name, "TXT", tuple(s.encode() for s in _STRING.findall(strings)))
        elif option == "address":
            _, name, address = value.split("/")
            add(name, "AAAA" if ":" in address else "A", address)
        else:
            raise ValueError(f"dnsmasq option the in-process zone does not know: {line!r}")
    return zone


def _is_address(text: str) -> bool:
    try:
        ip_address(text)
    except ValueError:
        return False
    return True
