"""Holes a second probe from outside found after the first round of fixes, one test each:
forged Authentication-Results in other spellings of our authserv-id, HELO names that break the
Received: line, routing in other spellings (DECnet, Unicode compatibility forms), and settings
that `config check` passed but `serve` could not use (a host name to listen on, an encrypted
TLS key, a Maildir path that is a file)."""

from __future__ import annotations

import email
import email.policy
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization

from mailmoat.cli import main
from mailmoat.policy.auth import authserv_id, forged_id
from mailmoat.smtp._abnf import routing_local_part
from tests.support.gateway import running_gateway
from tests.support.raw_client import RawClient
from tests.support.tls import self_signed_cert

OURS = "mx.mailmoat.test"


@pytest.mark.parametrize(
    "value",
    [
        "mx.mailmoat.test; dmarc=pass",
        "MX.MAILMOAT.TEST(c); dmarc=pass",
        '"mx.mailmoat\\.test"; dmarc=pass',  # a quoted-string with a quoted-pair
        "mx.mailmoat.test.; dmarc=pass",  # a final dot
        "mx.mailmoat.test/1; dmarc=pass",  # a tspecial ends the token
        "mx.mailmoat.test,; dmarc=pass",
        "=?us-ascii?q?mx.mailmoat.test?=; dmarc=pass",  # an encoded word
        "(comment) mx.mailmoat.test 1; dmarc=pass",
    ],
)
def test_every_spelling_of_our_authserv_id_is_forged(value: str) -> None:
    assert forged_id(value, OURS)


@pytest.mark.parametrize(
    "value", ["other.example; dmarc=pass", "mx.other.test; x=mx.mailmoat.test", "; spf=pass"]
)
def test_other_authserv_ids_are_kept(value: str) -> None:
    assert not forged_id(value, OURS)
    assert authserv_id('"a\\"b" ; x') == 'a"b'


def _deliver(port: int, helo: bytes, body: bytes, rcpt: bytes = b"alice@example.test") -> int:
    with RawClient(port) as c:
        c.expect(220)
        c.command(b"EHLO " + helo + b"\r\n")
        assert c.command(b"MAIL FROM:<bob@sender.test>\r\n").code == 250
        code = c.command(b"RCPT TO:<" + rcpt + b">\r\n").code
        if code != 250:
            return code
        assert c.command(b"DATA\r\n").code == 354
        return c.command(body + b"\r\n.\r\n").code


def test_forged_spellings_are_removed_end_to_end(tmp_path: Path) -> None:
    forged = (
        b'Authentication-Results: "mx.mailmoat\\.test"; dmarc=pass\r\n'
        b"Authentication-Results: mx.mailmoat.test.; dmarc=pass\r\n"
        b"Authentication-Results: =?us-ascii?q?mx.mailmoat.test?=; dmarc=pass\r\n"
        b"Authentication-Results: other.example; spf=pass\r\n"
        b"From: a@b.test\r\nSubject: f\r\n\r\nhi"
    )
    with running_gateway(tmp_path / "md", **{"dns.checks": False}) as gw:
        assert _deliver(gw.port, b"client.test", forged) == 250
    (path,) = (tmp_path / "md" / "new").iterdir()
    kept = email.message_from_bytes(path.read_bytes()).get_all("Authentication-Results")
    assert kept == ["other.example; spf=pass"]


def test_a_forged_field_longer_than_the_scan_reads_is_refused(tmp_path: Path) -> None:
    comment = b"(" + b"\r\n ".join([b"x" * 900] * 80) + b")"
    body = (
        b"Authentication-Results: " + comment + b" mx.mailmoat.test; dmarc=pass\r\n"
        b"From: ceo@bank.test\r\nSubject: t\r\n\r\nhi"
    )
    with running_gateway(tmp_path / "md", **{"dns.checks": False}) as gw:
        assert _deliver(gw.port, b"client.test", body) == 554
    assert not (tmp_path / "md" / "new").exists() or not any((tmp_path / "md" / "new").iterdir())


@pytest.mark.parametrize("helo", [b"(", b"a)(b", b"x;Mon,", b"x\\"])
def test_odd_helo_names_cannot_break_the_received_line(tmp_path: Path, helo: bytes) -> None:
    with running_gateway(tmp_path / "md", **{"dns.checks": False}) as gw:
        assert _deliver(gw.port, helo, b"Subject: h\r\n\r\nhi") == 250
    (path,) = (tmp_path / "md" / "new").iterdir()
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    received = " ".join(str(message["Received"]).split())
    assert received.startswith("from unknown (HELO "), received
    # the `by` and `id` clauses are outside any comment: balanced parentheses before `by`
    before_by = received.split(" by ", 1)[0]
    depth = 0
    escaped = False
    for ch in before_by:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
    assert depth == 0, received
    assert " by mx.mailmoat.test (mailmoat) with ESMTP id " in received


@pytest.mark.parametrize(
    "local",
    [
        '"host::user"',
        "x\uff05evil.test",  # FULLWIDTH PERCENT SIGN
        "x\uff20evil.test",  # FULLWIDTH COMMERCIAL AT
        "evil.test\uff01x",  # FULLWIDTH EXCLAMATION MARK
        "x\ufe6aevil.test",  # SMALL PERCENT SIGN
    ],
)
def test_routing_in_other_spellings_is_routing(local: str) -> None:
    assert routing_local_part(local)


def test_routing_in_other_spellings_is_refused(tmp_path: Path) -> None:
    with running_gateway(tmp_path / "md", **{"dns.checks": False}) as gw, RawClient(gw.port) as c:
        c.expect(220)
        c.command(b"EHLO client.test\r\n")
        assert c.command(b"MAIL FROM:<s@sender.test> SMTPUTF8\r\n").code == 250
        for rcpt in ('"host::user"@example.test', "x\uff05evil.test@example.test"):
            r = c.command(f"RCPT TO:<{rcpt}>\r\n".encode())
            assert (r.code, r.text[:6]) == (550, "5.7.1 "), (rcpt, r.code, r.text)
        assert c.command(b"RCPT TO:<alice@example.test>\r\n").code == 250


def _check(path: Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["config", "check", str(path)])
    return result.exit_code, result.output


@pytest.mark.parametrize("listen", ["localhost:2528", "nosuch.invalid:2526", "0177.0.0.1:2533"])
def test_listen_names_are_refused_at_check_and_serve(tmp_path: Path, listen: str) -> None:
    f = tmp_path / "l.toml"
    f.write_text(f'[server]\nlisten = ["{listen}"]\nhostname = "mx.t.test"\n')
    code, out = _check(f)
    assert code == 2 and out.startswith("config error: server.listen: ") and "not a name" in out
    done = subprocess.run(
        [sys.executable, "-m", "mailmoat", "serve", "-c", str(f)],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "server.listen" in done.stderr


def test_an_encrypted_key_is_one_line_and_never_prompts(tmp_path: Path) -> None:
    cert, key = self_signed_cert(tmp_path)
    loaded = serialization.load_pem_private_key(key.read_bytes(), password=None)
    encrypted = tmp_path / "enc.key"
    encrypted.write_bytes(
        loaded.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    f = tmp_path / "enc.toml"
    f.write_text(
        f'[server]\ntls_cert = "{cert}"\ntls_key = "{encrypted}"\nhostname = "mx.t.test"\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "mailmoat", "config", "check", str(f)],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        f"config error: server.tls_key: {encrypted} holds an encrypted private key (not supported)"
    ]


def test_a_maildir_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    afile = tmp_path / "file"
    afile.write_text("x")
    f = tmp_path / "m.toml"
    f.write_text(f'[server]\nhostname = "mx.t.test"\n[maildir]\npath = "{afile}"\n')
    code, out = _check(f)
    assert code == 2
    assert (
        out == f"config error: maildir.path: {afile} is not a folder mailmoat can write or make\n"
    )
    f.write_text(
        f'[server]\nhostname = "mx.t.test"\n[maildir]\npath = "{tmp_path / "new" / "md"}"\n'
    )
    assert _check(f)[0] == 0  # made at the first delivery
