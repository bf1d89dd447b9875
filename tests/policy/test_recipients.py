"""The RCPT check through the whole gateway with a static directory: 550 5.1.1 for unknown
recipients, nothing accepted for them, VRFY/EXPN reveal nothing, domains without a directory
behave as before; and the settings that choose a directory per domain."""

from __future__ import annotations

import smtplib
import sys
from pathlib import Path
from typing import Any

import pytest

from mailmoat import config
from tests.support.gateway import running_gateway

RECIPIENTS = "alice@example.test\nbob@example.test\n@catchall.test\n"


def static_overrides(tmp_path: Path, **more: Any) -> dict[str, Any]:
    path = tmp_path / "recipients"
    path.write_text(RECIPIENTS)
    return {
        "domains.local": ["example.test", "catchall.test", "open.test"],
        "directory.domains": {
            "example.test": "static",
            "catchall.test": "static",
            "open.test": "none",
        },
        "directory.static_file": str(path),
        **more,
    }


def test_unknown_recipient_gets_550_and_no_message_is_made_for_it(tmp_path: Path) -> None:
    maildir = tmp_path / "md"
    with running_gateway(maildir, **static_overrides(tmp_path)) as gw:
        with smtplib.SMTP("127.0.0.1", gw.port, timeout=10) as c:
            c.ehlo("client.test")
            refused = c.sendmail(
                "s@sender.test",
                [
                    "alice@example.test",
                    "nobody@example.test",
                    "x@catchall.test",
                    "anyone@open.test",
                    "Postmaster",
                    "postmaster@example.test",
                ],
                b"Subject: hi\r\n\r\nhello\r\n",
            )
            assert refused == {
                "nobody@example.test": (550, b"5.1.1 Recipient address rejected: no such user")
            }
            c.mail("s@sender.test")
            assert c.rcpt("nobody@example.test")[0] == 550
            assert c.rcpt("foreign@elsewhere.test")[0] == 554  # relay check first, as before
            code, _ = c.docmd("DATA")
            assert code == 554 or code == 503  # no valid recipient: no message at all
    files = list((maildir / "new").iterdir())
    assert len(files) == 1
    delivered = files[0].read_text()
    assert "nobody@example.test" not in delivered.split("\n\n", 1)[0]


def test_vrfy_and_expn_answer_the_same_for_valid_and_unknown(tmp_path: Path) -> None:
    with running_gateway(tmp_path / "md", **static_overrides(tmp_path)) as gw:
        with smtplib.SMTP("127.0.0.1", gw.port, timeout=10) as c:
            c.ehlo("client.test")
            valid = c.verify("alice@example.test")
            unknown = c.verify("nobody@example.test")
            assert valid == unknown and valid[0] == 252
            assert c.expn("alice@example.test") == c.expn("nobody@example.test")


def _after_connection_defences(gw: Any) -> list[str]:
    """Check names from relay_access on (admission, bans, pregreet, tarpit come first), less
    the relay's capability check, which always comes last."""
    names = [c.name for c in gw.gateway.pipeline.checks if c.name != "capabilities"]
    return names[names.index("relay_access") :]


def test_quick_start_without_a_directory_accepts_any_local_address(tmp_path: Path) -> None:
    with running_gateway(tmp_path / "md") as gw:
        assert gw.gateway is not None
        assert _after_connection_defences(gw) == ["relay_access", "forged_results"]
        with smtplib.SMTP("127.0.0.1", gw.port, timeout=10) as c:
            c.ehlo("client.test")
            c.mail("s@sender.test")
            assert c.rcpt("whoever@example.test")[0] == 250


def test_directory_checks_follow_relay_access(tmp_path: Path) -> None:
    with running_gateway(tmp_path / "md", **static_overrides(tmp_path)) as gw:
        assert gw.gateway is not None
        assert _after_connection_defences(gw) == [
            "relay_access",
            "harvest",
            "forged_results",
            "recipients",
        ]
    more = static_overrides(tmp_path, **{"harvest.enabled": False})
    with running_gateway(tmp_path / "md", **more) as gw:
        assert gw.gateway is not None
        assert _after_connection_defences(gw) == [
            "relay_access",
            "forged_results",
            "recipients",
        ]


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (
            {"domains.local": ["a.test", "b.test"], "directory.domains": {"a.test": "ldap"}},
            "b.test have no directory",
        ),
        (
            {"domains.local": ["a.test"], "directory.domains": {"c.test": "static"}},
            "'c.test' is not in domains.local",
        ),
        ({"domains.local": ["a.test"], "directory.default": "static"}, "static_file is needed"),
        ({"domains.local": ["a.test"], "directory.default": "ldap"}, "ldap.url and ldap.base"),
        (
            {"domains.local": ["a.test"], "directory.default": "callahead"},
            "callahead.server or relay.downstream",
        ),
        ({"harvest.tarpit_after": 30}, "tarpit_after <= threshold <= ban_after"),
        ({"harvest.exempt_networks": ["not-a-net"]}, "does not appear to be an IPv4 or IPv6"),
    ],
)
def test_settings_refuse_an_unsafe_or_incomplete_directory_choice(
    data: dict[str, Any], problem: str
) -> None:
    with pytest.raises(config.ConfigError) as err:
        config.load(None, data)
    assert problem in str(err.value)


def test_settings_accept_explicit_choices() -> None:
    s = config.load(
        None,
        {
            "domains.local": ["a.test", "B.test"],
            "directory.domains": {"a.test": "callahead", "b.test.": "none"},
            "relay.downstream": "127.0.0.1:25",
        },
    )
    assert s.directory_for("a.test") == "callahead" and s.directory_for("b.test") == "none"
    s = config.load(
        None,
        {
            "domains.local": ["a.test"],
            "directory.default": "callahead",
            "callahead.server": "10.0.0.5:25",
        },
    )
    assert s.directory_for("a.test") == "callahead"


def test_session_is_closed_after_session_max_unknown(tmp_path: Path) -> None:
    more = static_overrides(tmp_path, **{"harvest.session_max_unknown": 3})
    with running_gateway(tmp_path / "md", **more) as gw:
        with smtplib.SMTP("127.0.0.1", gw.port, timeout=10) as c:
            c.ehlo("client.test")
            c.mail("s@sender.test")
            assert c.rcpt("alice@example.test")[0] == 250
            assert c.rcpt("n1@example.test")[0] == 550
            assert c.rcpt("n2@example.test")[0] == 550
            assert c.rcpt("n3@example.test")[0] == 550  # the third: answered, then closed
            with pytest.raises(smtplib.SMTPServerDisconnected):
                c.rcpt("bob@example.test")


def test_serve_stops_with_a_clear_message_when_the_static_file_is_missing(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from mailmoat.cli import main

    cfg = tmp_path / "mailmoat.toml"
    cfg.write_text(
        '[server]\nlisten = ["127.0.0.1:0"]\nuvloop = false\n'
        '[domains]\nlocal = ["example.test"]\n'
        f'[directory]\ndefault = "static"\nstatic_file = "{tmp_path / "missing"}"\n'
    )
    result = CliRunner().invoke(main, ["serve", "-c", str(cfg)])
    # checked with the settings, before anything starts (issue 10 item 11)
    assert result.exit_code == 2
    (line,) = result.output.splitlines()
    assert line.startswith("config error: directory.static_file: ") and "missing" in line


def test_an_ldap_directory_without_ldap3_is_one_clear_problem(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ldap3 is the `ldap` extra: without it an LDAP directory is refused at `config check`
    and at start with the command that installs it, not a traceback at the first lookup."""
    monkeypatch.setitem(sys.modules, "ldap3", None)  # `import ldap3` raises ImportError
    data = {
        "domains.local": ["a.test"],
        "directory.default": "ldap",
        "ldap.url": "ldap://127.0.0.1:1",
        "ldap.base": "dc=a,dc=test",
    }
    with pytest.raises(config.ConfigError) as err:
        config.load(None, data)
    assert "pip install 'mailmoat[ldap]'" in str(err.value)
    monkeypatch.delitem(sys.modules, "ldap3")
    assert config.load(None, data).directory.default == "ldap"
