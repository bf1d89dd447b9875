"""mailmoat's nftables table as JSON commands (`nft -j`), and the one way they are run.

Every change goes through nftables' JSON interface as one batch: `nft -j -f -` reads the
commands from stdin and applies them in one kernel transaction (all or nothing). No rule text
is ever written or edited; every command names mailmoat's own table, so nothing outside it is
touched.

The table (inet family, so one table serves IPv4 and IPv6):
* `addr4`, `addr6`: banned addresses, each with its own timeout;
* `net4`, `net6`: banned networks (interval sets, with timeouts);
* `rate4`, `rate6` (with the rate meter): one token bucket per source address;
* chain `input`: a new connection (a bare SYN) to a listening port from an element of those
  sets is dropped; with the meter, so is one above the rate.

Removing an element that the kernel already expired fails, and one failure fails the whole
batch; so a removal first adds the element (a no-op when it is there) and then deletes it, and
a ban that replaces a shorter one is removed that way and added anew with its new timeout.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import subprocess
from collections.abc import Iterable
from ipaddress import IPv4Network, IPv6Network
from typing import Any

from mailmoat.limits import PACKETFILTER_ERROR_CHARS as ERROR_CHARS
from mailmoat.limits import PACKETFILTER_MAX_ELEMENTS as MAX_ELEMENTS
from mailmoat.limits import PACKETFILTER_PRIORITY as PRIORITY
from mailmoat.limits import PACKETFILTER_TIMEOUT as TIMEOUT

Net = IPv4Network | IPv6Network
Command = dict[str, Any]

SYSTEM_PATH = "/usr/sbin:/sbin:/usr/bin:/bin"
"""Where `nft` is looked for besides $PATH (an unprivileged user's $PATH often lacks sbin)."""

_NEW_CONNECTION = {  # tcp flags & (fin|syn|rst|ack) == syn
    "match": {
        "op": "==",
        "left": {
            "&": [{"payload": {"protocol": "tcp", "field": "flags"}}, ["fin", "syn", "rst", "ack"]]
        },
        "right": "syn",
    }
}
_PER = (("second", 1.0), ("minute", 60.0), ("hour", 3600.0), ("day", 86400.0))


def set_name(net: Net) -> str:
    kind = "addr" if net.prefixlen == net.max_prefixlen else "net"
    return f"{kind}{net.version}"


def element(net: Net) -> str | dict[str, Any]:
    if net.prefixlen == net.max_prefixlen:
        return str(net.network_address)
    return {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}


def timeout(seconds: float) -> int:
    """An element's timeout: whole seconds, never shorter than the ban."""
    return max(1, math.ceil(seconds))


def rate_limit(max_rate: int, window: float) -> dict[str, Any]:
    """A limit statement matching `max_rate` new connections per `window` seconds: a bucket
    of `max_rate` refilled at that rate, in the largest unit that keeps the rate whole."""
    per, rate = "second", max(1, round(max_rate / window))
    for unit, seconds in _PER:
        exact = max_rate * seconds / window
        if exact >= 1 and abs(exact - round(exact)) < 1e-9:
            per, rate = unit, round(exact)
            break
    else:
        per, rate = "day", max(1, round(max_rate * 86400.0 / window))
    return {"limit": {"rate": rate, "per": per, "burst": max_rate, "inv": True}}


def create(table: str, ports: Iterable[int], meter: tuple[int, float] | None) -> list[Command]:
    """The commands that (re)make the table empty: any table of that name left by an earlier
    run (`packetfilter.keep_at_stop`) is replaced, all in one transaction."""
    ident = {"family": "inet", "table": table}
    cmds: list[Command] = [
        {"add": {"table": {"family": "inet", "name": table}}},
        {"delete": {"table": {"family": "inet", "name": table}}},
        {"add": {"table": {"family": "inet", "name": table}}},
    ]
    for version in (4, 6):
        kind = f"ipv{version}_addr"
        for name, flags in (
            (f"addr{version}", ["timeout"]),
            (f"net{version}", ["interval", "timeout"]),
        ):
            cmds.append(
                {
                    "add": {
                        "set": {
                            **ident,
                            "name": name,
                            "type": kind,
                            "flags": flags,
                            "size": MAX_ELEMENTS,
                        }
                    }
                }
            )
        if meter is not None:
            cmds.append(
                {
                    "add": {
                        "set": {
                            **ident,
                            "name": f"rate{version}",
                            "type": kind,
                            "flags": ["timeout"],
                            "timeout": timeout(meter[1]),
                            "size": MAX_ELEMENTS,
                        }
                    }
                }
            )
    chain = {**ident, "name": "input"}
    cmds.append(
        {
            "add": {
                "chain": {
                    **chain,
                    "type": "filter",
                    "hook": "input",
                    "prio": PRIORITY,
                    "policy": "accept",
                }
            }
        }
    )
    port_match = {
        "match": {
            "op": "==",
            "left": {"payload": {"protocol": "tcp", "field": "dport"}},
            "right": {"set": sorted(set(ports))},
        }
    }
    for version in (4, 6):
        saddr = {"payload": {"protocol": "ip" if version == 4 else "ip6", "field": "saddr"}}
        for name in (f"addr{version}", f"net{version}"):
            in_set = {"match": {"op": "==", "left": saddr, "right": f"@{name}"}}
            expr = [port_match, _NEW_CONNECTION, in_set, {"drop": None}]
            cmds.append({"add": {"rule": {**ident, "chain": "input", "expr": expr}}})
        if meter is not None:
            over = {
                "set": {
                    "op": "add",
                    "elem": saddr,
                    "set": f"@rate{version}",
                    "stmt": [rate_limit(*meter)],
                }
            }
            expr = [port_match, _NEW_CONNECTION, over, {"drop": None}]
            cmds.append({"add": {"rule": {**ident, "chain": "input", "expr": expr}}})
    return cmds


def destroy(table: str) -> list[Command]:
    return [{"delete": {"table": {"family": "inet", "name": table}}}]


def update(table: str, lift: Iterable[Net], put: Iterable[tuple[Net, float]]) -> list[Command]:
    """One batch: remove every net in `lift` and (re)add every (net, seconds) in `put`."""
    ensure: dict[str, list[Any]] = {}
    delete: dict[str, list[Any]] = {}
    add: dict[str, list[Any]] = {}
    for net in lift:
        ensure.setdefault(set_name(net), []).append({"elem": {"val": element(net), "timeout": 1}})
        delete.setdefault(set_name(net), []).append(element(net))
    for net, seconds in put:
        name, val = set_name(net), element(net)
        ensure.setdefault(name, []).append({"elem": {"val": val, "timeout": 1}})
        delete.setdefault(name, []).append(val)
        add.setdefault(name, []).append({"elem": {"val": val, "timeout": timeout(seconds)}})
    cmds: list[Command] = []
    for verb, groups in (("add", ensure), ("delete", delete), ("add", add)):
        for name, elems in sorted(groups.items()):
            cmds.append(
                {verb: {"element": {"family": "inet", "table": table, "name": name, "elem": elems}}}
            )
    return cmds


def find_nft() -> str | None:
    path = os.environ.get("PATH", "")
    return shutil.which("nft", path=f"{path}:{SYSTEM_PATH}" if path else SYSTEM_PATH)


async def run(nft: str, commands: list[Command]) -> str:
    """Apply `commands` in one transaction; "" on success, else nft's error in one line.
    (`nft` runs from a thread: the event loop's own subprocess pipes are not used, since
    uvloop's may fail to write to an `nft` that already exited.)"""
    if not commands:
        return ""
    data = json.dumps({"nftables": commands}).encode()
    try:
        done = await asyncio.to_thread(
            subprocess.run,
            [nft, "-j", "-f", "-"],
            input=data,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"{nft} did not finish in {TIMEOUT:g} s"
    except OSError as err:
        return f"cannot run {nft}: {err}"
    if done.returncode == 0:
        return ""
    text = " ".join(done.stderr.decode(errors="replace").split())
    return (text or f"nft exited with {done.returncode}")[:ERROR_CHARS]
