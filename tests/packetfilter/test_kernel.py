"""The packet filter against the real kernel: a `mailmoat serve` in a network namespace of the
test's own drives its nftables table. A banned address's connection attempts go unanswered
(the connect times out: no accept, no 421), unban restores them, elements expire in the
kernel, the table is gone after stop (or kept), bans made by mailmoat itself reach the kernel
(through the supervisor of worker processes), the rate meter drops a flood above
admission.max_rate, and a start without CAP_NET_ADMIN says so in one line and mailmoat still
refuses banned addresses itself."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.netns import Netns, needs_root, netns
from tests.support.netns_gateway import PORT, TABLE, served
from tests.support.netns_gateway import addresses as _addresses
from tests.support.netns_gateway import tables as _tables
from tests.support.waiting import wait_until

pytestmark = needs_root


@pytest.fixture
def ns() -> Iterator[Netns]:
    with netns() as made:
        yield made


def test_a_ban_drops_connections_in_the_kernel_and_unban_restores_them(
    tmp_path: Path, ns: Netns
) -> None:
    with served(tmp_path, ns) as gw:
        assert gw.greeting("127.0.0.5").startswith(b"220 ")
        gw.ban("127.0.0.5", 600)
        gw.ban("::1", 600)
        gw.ban("10.9.0.0/16", 600)
        # three admin requests may go out as up to three batches: wait for each set
        wait_until(lambda: _addresses(ns, "addr4") == {"127.0.0.5"}, "the ban in the kernel")
        wait_until(lambda: _addresses(ns, "addr6") == {"::1"}, "the IPv6 ban in the kernel")
        wait_until(lambda: _addresses(ns, "net4") == {"10.9.0.0/16"}, "the network ban too")
        # no accept, no 421: the SYN is dropped and the connect times out
        assert gw.dropped("127.0.0.5")
        assert gw.dropped("::1")
        assert gw.greeting("127.0.0.6").startswith(b"220 ")  # others are not touched
        gw.unban("127.0.0.5")
        wait_until(lambda: not _addresses(ns, "addr4"), "the element removed")
        assert gw.greeting("127.0.0.5").startswith(b"220 ")
        assert _addresses(ns, "addr6") == {"::1"}
    assert TABLE not in _tables(ns)  # deleted at stop


def test_the_table_is_made_afresh_and_filled_from_the_store_and_kept_with_the_option(
    tmp_path: Path, ns: Netns
) -> None:
    ns.run("nft", "add", "table", "inet", "someone_else")
    with served(tmp_path, ns, **{"packetfilter.keep_at_stop": True}) as gw:
        gw.ban("127.0.0.7", 600)
        wait_until(lambda: _addresses(ns, "addr4") == {"127.0.0.7"}, "the ban in the kernel")
    assert TABLE in _tables(ns)  # kept, bans and all
    assert _addresses(ns, "addr4") == {"127.0.0.7"}
    assert "someone_else" in _tables(ns)  # another table is never touched
    # a new start replaces the kept table: its own store (in memory) is empty now
    with served(tmp_path, ns) as gw:
        wait_until(lambda: not _addresses(ns, "addr4"), "the table made afresh")
        assert gw.greeting("127.0.0.7").startswith(b"220 ")
    assert _tables(ns) == {"someone_else"}


def test_an_element_expires_in_the_kernel(tmp_path: Path, ns: Netns) -> None:
    with served(tmp_path, ns) as gw:
        gw.ban("127.0.0.8", 2)
        wait_until(lambda: _addresses(ns, "addr4") == {"127.0.0.8"}, "the ban in the kernel")
        (elem,) = ns.elements(TABLE, "addr4")
        assert elem["elem"]["timeout"] == 2  # the ban's length, in the kernel
        wait_until(lambda: not _addresses(ns, "addr4"), "the element expired", timeout=30)
        assert not gw.counters().get("packetfilter.lifted")  # the kernel expired it, not mailmoat
        assert gw.greeting("127.0.0.8").startswith(b"220 ")


def test_bans_mailmoat_makes_reach_the_kernel_from_the_supervisor(
    tmp_path: Path, ns: Netns
) -> None:
    """Connection-rate and pregreet strikes ban the address (server.workers 2: the
    supervisor admits and owns the filter)."""
    settings = {
        "server.workers": 2,
        "admission.max_rate": 2,
        "bans.strikes": 1,
        "pregreet.wait": 1.0,
    }
    with served(tmp_path, ns, **settings) as gw:
        answers = [gw.greeting("127.0.0.9") for _ in range(3)]
        assert answers[2].startswith(b"421 ")  # over the rate: refused, a strike, a ban
        with ns.connect("127.0.0.15", PORT, timeout=10) as early:
            early.sendall(b"EHLO early.example\r\n")  # before the greeting
            assert early.recv(512)[:1] in (b"4", b"5")
        wait_until(
            lambda: _addresses(ns, "addr4") == {"127.0.0.9", "127.0.0.15"},
            "the bans in the kernel",
        )
        assert gw.dropped("127.0.0.9")
        assert gw.dropped("127.0.0.15")


def test_the_rate_meter_drops_a_flood_above_the_rate(tmp_path: Path, ns: Netns) -> None:
    with served(
        tmp_path,
        ns,
        **{"admission.max_rate": 5, "packetfilter.rate_meter": True, "bans.strikes": 0},
    ) as gw:
        for _ in range(5):
            assert gw.greeting("127.0.0.10").startswith(b"220 ")
        assert gw.dropped("127.0.0.10")  # the 6th in the minute never reaches mailmoat
        assert gw.greeting("127.0.0.11").startswith(b"220 ")  # a meter per source
        assert "127.0.0.10" in _addresses(ns, "rate4")


def test_without_net_admin_one_line_and_mailmoat_still_refuses_bans(
    tmp_path: Path, ns: Netns
) -> None:
    no_net_admin = ("setpriv", "--bounding-set", "-net_admin", "--inh-caps", "-net_admin", "--")
    with served(tmp_path, ns, wrapper=no_net_admin) as gw:
        lines = [line for line in gw.text().splitlines() if "packetfilter" in line]
        assert len(lines) == 1, lines
        assert "action=off" in lines[0] and "CAP_NET_ADMIN" in lines[0]
        assert "Operation not permitted" in lines[0]
        assert TABLE not in _tables(ns)
        gw.ban("127.0.0.12", 600)
        assert gw.greeting("127.0.0.12").startswith(b"421 ")  # refused by mailmoat itself
    assert "Traceback" not in gw.text()


def test_an_unprivileged_user_with_cap_net_admin_runs_the_filter(ns: Netns) -> None:
    """The deployment docs/packet-filter.md describes: an unprivileged user holding
    CAP_NET_ADMIN as an ambient capability (systemd's AmbientCapabilities=), which `nft`
    inherits."""
    as_nobody = (
        "setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups",
        "--inh-caps", "+net_admin", "--ambient-caps", "+net_admin", "--",
    )  # fmt: skip
    home = Path(tempfile.mkdtemp(prefix="mm-nobody-"))
    try:
        home.chmod(0o777)  # nobody writes its Maildir and admin socket here
        with served(home, ns, wrapper=as_nobody) as gw:
            assert "action=on" in gw.text()
            gw.ban("127.0.0.14", 600)
            wait_until(lambda: _addresses(ns, "addr4") == {"127.0.0.14"}, "the ban in the kernel")
            assert gw.dropped("127.0.0.14")
        assert TABLE not in _tables(ns)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_a_default_start_leaves_the_ruleset_alone(tmp_path: Path, ns: Netns) -> None:
    with served(tmp_path, ns, **{"packetfilter.backend": "none"}) as gw:
        gw.ban("127.0.0.13", 600)
        assert gw.greeting("127.0.0.13").startswith(b"421 ")
        assert _tables(ns) == set()
    assert "packetfilter" not in gw.text()


def test_a_start_that_fails_after_the_table_was_made_removes_it(tmp_path: Path, ns: Netns) -> None:
    # the admin endpoint starts after the listeners (and the filter): its socket cannot be made
    config = tmp_path / "mailmoat.toml"
    config.write_text(
        f'[server]\nlisten = ["127.0.0.1:{PORT}"]\nhostname = "mx.example.test"\nuvloop = false\n'
        f'[domains]\nlocal = ["example.test"]\n[maildir]\npath = "{tmp_path / "Maildir"}"\n'
        f'[admin]\nlisten = "{tmp_path / "missing" / "admin.sock"}"\n[dns]\nchecks = false\n'
        f'[packetfilter]\nbackend = "nftables"\ntable = "{TABLE}"\n'
    )
    done = subprocess.run(
        ns.command(sys.executable, "-m", "mailmoat", "serve", "-c", str(config)),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1 and "cannot start" in done.stderr, done.stderr
    assert "packetfilter" in done.stdout + done.stderr  # the table had been made
    assert TABLE not in _tables(ns)
