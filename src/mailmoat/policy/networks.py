"""Address helpers for the connection-level defences: CIDR sets with longest-prefix lookup,
network grouping keys, and a bounded expiring cache for verdicts kept on this node."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv6Address, ip_network

IPAddress = IPv4Address | IPv6Address


def source_key(source: str) -> str:
    """The store key of a harvest score: `dha:ip:<ip>` for an address, `dha:net:<cidr>` for
    a network (a ban of it is `ban:` + this key). Here, not in the harvest check, because the
    ban list lifts such bans too."""
    return f"dha:net:{source}" if "/" in source else f"dha:ip:{source}"


class NetworkSet:
    """A set of CIDR networks. A lookup costs one dict probe per distinct prefix length in use,
    however many networks the set holds, so a deny list of thousands stays cheap at accept."""

    def __init__(self, networks: Iterable[str] = ()) -> None:
        self._by_len: dict[int, dict[int, set[int]]] = {4: {}, 6: {}}
        for text in networks:
            net = ip_network(text, strict=False)
            bits = net.max_prefixlen - net.prefixlen
            self._by_len[net.version].setdefault(net.prefixlen, set()).add(
                int(net.network_address) >> bits
            )
        self._order = {
            v: sorted(((plen, table) for plen, table in t.items()), reverse=True)
            for v, t in self._by_len.items()
        }
        self._max = {4: 32, 6: 128}

    def __bool__(self) -> bool:
        return bool(self._order[4] or self._order[6])

    def longest(self, ip: IPAddress) -> int:
        """Prefix length of the most specific network that holds `ip`, or -1."""
        value = int(ip)
        top = self._max[ip.version]
        for plen, table in self._order[ip.version]:
            if value >> (top - plen) in table:
                return plen
        return -1

    def __contains__(self, ip: IPAddress) -> bool:
        return self.longest(ip) >= 0


def network_key(ip: IPAddress, v4_prefix: int, v6_prefix: int) -> int:
    """An int naming the /v4_prefix or /v6_prefix network of `ip` (IPv6 keys are negative)."""
    if ip.version == 4:
        return int(ip) >> (32 - v4_prefix)
    return -1 - (int(ip) >> (128 - v6_prefix))


def address_key(ip: IPAddress) -> int:
    """An int naming one address (IPv6 keys are negative, so the families never collide)."""
    return int(ip) if ip.version == 4 else -1 - int(ip)


class ExpiringCache:
    """key -> deadline, at most `size` keys (the least recently set go first)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._data: OrderedDict[object, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def set(self, key: object, until: float) -> None:
        data = self._data
        data[key] = until
        data.move_to_end(key)
        if len(data) > self.size:
            data.popitem(last=False)

    def live(self, key: object, now: float) -> bool:
        """True while `key` is set and its deadline is in the future (expired keys are dropped)."""
        until = self._data.get(key)
        if until is None:
            return False
        if until <= now:
            del self._data[key]
            return False
        return True

    def until(self, key: object) -> float | None:
        return self._data.get(key)

    def discard(self, key: object) -> None:
        self._data.pop(key, None)
