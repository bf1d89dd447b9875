"""One log line per connection and one per transaction outcome, in text and JSON."""

from __future__ import annotations

import io
import json
import smtplib
from pathlib import Path

from mailmoat import logs
from mailmoat.config import LogSettings
from tests.support.gateway import running_gateway


def test_json_lines_for_connection_and_transaction(tmp_path: Path) -> None:
    out = io.StringIO()
    logs.setup(LogSettings(format="json"), out)
    with running_gateway(tmp_path / "md") as gw, smtplib.SMTP("127.0.0.1", gw.port) as c:
        c.ehlo("client.test")
        c.sendmail(
            "a@b.test", ["alice@example.test", "bob@example.test"], b"Subject: x\r\n\r\nhi\r\n"
        )
    docs = [json.loads(line) for line in out.getvalue().splitlines()]
    (tx,) = [d for d in docs if d["event"] == "transaction"]
    assert tx["client"] == "127.0.0.1" and tx["helo"] == "client.test"
    assert tx["sender"] == "<a@b.test>"
    assert tx["recipients"] == ["<alice@example.test>", "<bob@example.test>"]
    assert tx["size"] > len(b"Subject: x\r\n\r\nhi\r\n")
    assert tx["result"].startswith("250 2.0.0 Ok: queued as " + tx["queue_id"])
    assert tx["downstream"].startswith("maildir new/")
    assert tx["duration"] >= 0
    (conn,) = [d for d in docs if d["event"] == "disconnect"]
    assert conn["transactions"] == 1 and conn["reason"] == "quit" and conn["errors"] == 0


def test_text_line_for_a_refused_message(tmp_path: Path) -> None:
    out = io.StringIO()
    logs.setup(LogSettings(format="text"), out)
    with running_gateway(tmp_path / "md", **{"smtp.max_message_size": 1024}) as gw:
        with smtplib.SMTP("127.0.0.1", gw.port) as c:
            c.ehlo("client.test")
            c.mail("a@b.test")
            c.rcpt("alice@example.test")
            assert c.data(b"x" * 900 + b"\r\n" + b"y" * 900 + b"\r\n")[0] == 552
    lines = out.getvalue().splitlines()
    (tx,) = [line for line in lines if " transaction " in line]
    assert "result=message_too_big" in tx and "sender=<a@b.test>" in tx
    assert "recipients=<alice@example.test>" in tx
