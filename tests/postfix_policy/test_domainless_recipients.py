"""Integrated mode: a recipient without a domain, as Postfix passes it to the policy service,
gets the same routing refusal as one with a local domain (issue 10, the third red-team probe).
`v%outside.test` and `outside.test!v` are routed out by Postfix's percent hack and bang path;
the bare postmaster, or a plain local part, stays accepted."""

from __future__ import annotations

from pathlib import Path

from tests.postfix_policy.test_service import policy_settings
from tests.support.gateway import running_gateway
from tests.support.policy_client import PolicyClient

ROUTING = "550 5.7.1 Sender-specified routing"


def test_domainless_routing_forms_are_refused(tmp_path: Path) -> None:
    overrides = policy_settings(tmp_path, **{"directory.default": "none"})
    host, port = overrides["policy.listen"].split(":")
    with running_gateway(tmp_path / "Maildir", **overrides), PolicyClient((host, int(port))) as c:
        for recipient in ("v%outside.test", "outside.test!v", "v%x%y"):
            assert c.ask("RCPT", recipient=recipient).startswith(ROUTING), recipient
        for recipient in ("postmaster", "Postmaster", "alice"):
            assert c.ask("RCPT", recipient=recipient) == "DUNNO", recipient
