"""What the console's pages show, against a running gateway: recent transactions (searchable),
the directory lookup with its source, the configuration with its secrets masked, and the
per-minute history behind the chart."""

from __future__ import annotations

import json
import re
import smtplib
from pathlib import Path

from mailmoat.console.history import History
from mailmoat.console.pages import masked
from mailmoat.limits import (
    CONSOLE_HISTORY_MINUTES,
    CONSOLE_OFFENDERS,
    CONSOLE_RECENT_TRANSACTIONS,
    LINK_MAX_MESSAGE,
)
from mailmoat.stats import Stats
from tests.support.console import Browserless, console_overrides, running_console
from tests.support.gateway import gateway_settings
from tests.support.raw_client import connect, greeting, read_reply
from tests.support.waiting import wait_until


def test_recent_transactions_are_listed_and_searchable(tmp_path: Path) -> None:
    users = tmp_path / "directory"
    users.write_text("alice@example.test\n")
    settings = {"directory.default": "static", "directory.static_file": str(users)}
    with running_console(tmp_path, **settings) as (gw, port):
        with smtplib.SMTP("127.0.0.1", gw.port, timeout=20) as smtp:
            smtp.sendmail("carol@sender.test", ["alice@example.test"], b"Subject: hi\r\n\r\nhi\r\n")
            smtp.sendmail("dave@other.test", ["alice@example.test"], b"Subject: yo\r\n\r\nyo\r\n")
        client = Browserless(port)
        assert client.login() == 303
        status, _, page = client.request("GET", "/transactions")
        assert status == 200
        assert "carol@sender.test" in page and "dave@other.test" in page
        _, _, found = client.request("GET", "/transactions?q=CAROL")
        assert "carol@sender.test" in found and "dave@other.test" not in found
        # the directory: which addresses exist, and which source says so
        _, _, page = client.request("GET", "/directory?address=alice@example.test")
        assert "alice@example.test</strong>: valid (source: static)" in page
        _, _, page = client.request("GET", "/directory?address=mallory@example.test")
        assert "mallory@example.test</strong>: unknown (source: static)" in page
        _, _, page = client.request("GET", "/directory?address=x@elsewhere.test")
        assert "not a local domain" in page
        # every lookup is audited: who asked about which address, and the answer
        audit = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
        asked = [(e["what"], e["result"], e["target"]) for e in audit if e["what"] == "lookup"]
        assert ("lookup", "attempt", "mallory@example.test") in asked
        assert ("lookup", "valid", "alice@example.test") in asked


def test_the_configuration_is_shown_with_secrets_masked(tmp_path: Path) -> None:
    secret = tmp_path / "ldap-password"
    secret.write_text("hunter2\n")
    with running_console(tmp_path, **{"ldap.bind_password_file": str(secret)}) as (_, port):
        client = Browserless(port)
        assert client.login() == 303
        status, _, page = client.request("GET", "/config")
        assert status == 200
        assert "&quot;hostname&quot;: &quot;mx.mailmoat.test&quot;" in page
        assert "&quot;bind_password_file&quot;: &quot;********&quot;" in page
        assert str(secret) not in page


def test_passwords_inside_urls_are_masked_and_only_secret_names_are(tmp_path: Path) -> None:
    overrides = {
        "store.url": "redis://:RedisPw123@127.0.0.1:6390/0",
        "ldap.url": "ldap://reader:LdapUrlPw@127.0.0.1:3890 ldaps://reader:LdapUrlPw2@[::1]:6360",
        "ldap.bind_password": "BindPw",
    }
    with running_console(tmp_path, **overrides) as (_, port):
        client = Browserless(port)
        assert client.login() == 303
        status, _, page = client.request("GET", "/config")
        assert status == 200
        for secret in ("RedisPw123", "LdapUrlPw", "BindPw"):
            assert secret not in page
        assert "redis://:********@127.0.0.1:6390/0" in page
        assert "ldap://reader:********@127.0.0.1:3890 ldaps://reader:********@[::1]:6360" in page
        # "key" as a word of the name (tls_key), not inside another word (max_keys)
        assert "&quot;max_keys&quot;: 200000" in page
        assert "&quot;max_security_keys&quot;: 100000" in page


def test_url_passwords_are_masked_in_any_setting_and_odd_urls_stay_masked() -> None:
    shown = masked(
        {
            "a": {"b": ["https://u:p@ss/w@h/x", "redis://h:6379/0", "unix:///run/r.sock"]},
            "note": "see smtp://x:y@z",
            "api_token": 5,
            "secret": None,
        }
    )
    assert shown == {
        "a": {"b": ["https://u:********@h/x", "redis://h:6379/0", "unix:///run/r.sock"]},
        "note": "see smtp://x:********@z",
        "api_token": "********",
        "secret": None,
    }


def test_the_ring_and_the_history_are_bounded() -> None:
    stats = Stats()
    for n in range(CONSOLE_RECENT_TRANSACTIONS + 5):
        stats.transaction("192.0.2.1", f"s{n}@x.test", ["a@example.test"], 10, "250 ok")
    recent = stats.snapshot()["recent"]
    assert len(recent) == CONSOLE_RECENT_TRANSACTIONS and recent[-1]["sender"] == f"s{n}@x.test"
    history = History()
    minute = 60.0 * 1000
    history.add(minute, {"counters": {"messages.accepted": 10, "refused.banned": 1}})
    history.add(minute + 61, {"counters": {"messages.accepted": 13, "refused.banned": 3}})
    history.add(
        minute + 62,
        {"counters": {"messages.accepted": 14, "refused.banned": 3, "messages.refused": 1}},
    )
    series = history.series(minute + 62)
    assert len(series) == CONSOLE_HISTORY_MINUTES
    assert series[-1][1:] == (4, 3)  # the first reading is the baseline; then +3 +1, +2 +1
    assert series[-2][1:] == (0, 0)
    for step in range(3 * CONSOLE_HISTORY_MINUTES):
        history.add(minute + 120 + 60 * step, {"counters": {"messages.accepted": 20 + step}})
    assert len(history.buckets) == CONSOLE_HISTORY_MINUTES


def test_top_offenders_are_the_addresses_refused_most(tmp_path: Path) -> None:
    users = tmp_path / "directory"
    users.write_text("alice@example.test\n")
    settings = {
        "admission.deny_networks": ["127.0.40.0/24"],
        "directory.default": "static",
        "directory.static_file": str(users),
    }
    with running_console(tmp_path, **settings) as (gw, port):
        for source in ("127.0.40.1", "127.0.40.2", "127.0.40.1", "127.0.40.1"):
            assert greeting(gw.port, source).startswith(b"421")
        # a harvester: unknown recipients are refused and raise its harvest score
        with smtplib.SMTP("127.0.0.1", gw.port, timeout=20, source_address=("127.0.41.7", 0)) as c:
            c.ehlo("harvest.test")
            c.mail("h@harvest.test")
            assert c.rcpt("nobody1@example.test")[0] == 550
            assert c.rcpt("nobody2@example.test")[0] == 550
        client = Browserless(port)
        assert client.login() == 303
        status, _, page = client.request("GET", "/offenders")
        assert status == 200
        table = page.partition("<table id=offenders>")[2].partition("</table>")[0]
        rows = [re.findall(r"<td>(.*?)</td>", row) for row in table.split("<tr>")[2:]]
        assert rows == [
            ["127.0.40.1", "3", "0", "0"],
            ["127.0.41.7", "2", "2", "2"],
            ["127.0.40.2", "1", "0", "0"],
        ]


def test_the_offender_table_is_bounded_and_keeps_the_heavy_hitters() -> None:
    stats = Stats()
    for _ in range(50):
        stats.offender("192.0.2.1")
    for n in range(3 * CONSOLE_OFFENDERS):
        stats.offender(f"10.{n // 65536}.{n // 256 % 256}.{n % 256}")
    assert len(stats.offenders) <= CONSOLE_OFFENDERS
    assert stats.offenders["192.0.2.1"] == 50


def test_the_overview_shows_stress_mode_and_live_connections(tmp_path: Path) -> None:
    settings = {"admission.max_connections": 10, "stress.start_at": 0.2, "stress.stop_at": 0.1}
    with running_console(tmp_path, **settings) as (gw, port):
        client = Browserless(port)
        assert client.login() == 303
        assert "<strong id=stress>off</strong>" in client.request("GET", "/")[2]
        held = [connect(gw.port) for _ in range(3)]  # past 2 of 10: stress mode
        try:
            for sock in held:
                assert read_reply(sock).startswith(b"220")
            wanted = ("<strong id=stress>on</strong>", "<td>gateway</td><td>3</td><td>3</td>")
            wait_until(
                lambda: all(w in client.request("GET", "/")[2] for w in wanted),
                "the overview shows stress mode and the three sessions",
                describe=lambda: client.request("GET", "/")[2].partition("<h2>Processes")[2],
            )
        finally:
            for sock in held:
                sock.close()


def test_after_a_reload_the_console_shows_the_new_settings_and_directory(tmp_path: Path) -> None:
    users = tmp_path / "directory"
    users.write_text("alice@example.test\n")
    settings = {"directory.default": "static", "directory.static_file": str(users)}
    with running_console(tmp_path, **settings) as (gw, port):
        client = Browserless(port)
        assert client.login() == 303
        assert (
            "bob@example.test</strong>: unknown"
            in client.request("GET", "/directory?address=bob@example.test")[2]
        )
        users.write_text("bob@example.test\n")
        newer = gateway_settings(tmp_path / "md", **console_overrides(tmp_path), **settings,
                                 **{"server.hostname": "mx2.mailmoat.test"})  # fmt: skip
        assert gw.gateway is not None
        gw.run(gw.gateway.reload(newer))
        assert (
            "bob@example.test</strong>: valid"
            in client.request("GET", "/directory?address=bob@example.test")[2]
        )
        assert "mx2.mailmoat.test" in client.request("GET", "/config")[2]


def test_a_worker_snapshot_stays_far_below_the_link_bound_at_worst() -> None:
    """The snapshot crosses the supervisor-worker link (LINK_MAX_MESSAGE): the longest
    summaries and the most offenders a process keeps must leave room for the counters."""
    stats = Stats()
    long = "x" * 300 + "@" + "d" * 250
    for _ in range(CONSOLE_RECENT_TRANSACTIONS):
        stats.transaction("ffff:" * 7 + "ffff", long, [long] * 1000, 2**40, "550 " + "y" * 500)
    for n in range(CONSOLE_OFFENDERS):
        stats.offender(f"2001:db8:ffff:ffff:ffff:ffff:ffff:{n:x}")
    size = len(json.dumps(stats.snapshot()))
    assert size < LINK_MAX_MESSAGE // 2, size
    assert stats.snapshot()["recent"][0]["recipients"][-1] == "+997 more"
