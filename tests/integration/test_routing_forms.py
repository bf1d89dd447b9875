"""Sender-specified routing (issue 10 item 3) against a real Postfix inside.

The inside Postfix trusts the gateway as a real deployment does (the gateway is in its
``mynetworks``), serves ``inside.test`` as a local domain (``mydestination``) and keeps
``allow_percent_hack`` and ``swap_bangpath`` at their defaults (yes). Everything it would send
elsewhere goes to an smtp-sink standing for "the outside". Postfix rewrites
``victim%outside.test@inside.test``, ``outside.test!victim@inside.test`` and
``"victim@outside.test"@inside.test`` to ``victim@outside.test`` and relays it: mailmoat must
refuse these forms itself, at RCPT, for clients outside ``domains.relay_networks``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.gateway import running_gateway
from tests.support.peer_clients import swaks

pytestmark = pytest.mark.peers

ROUTING_FORMS = (
    "victim%outside.test@inside.test",
    "outside.test!victim@inside.test",
    '"victim@outside.test"@inside.test',
    '"victim%outside.test"@inside.test',
)


def _inside(postfix_instance, outside_port: int):
    return postfix_instance.downstream(
        mynetworks="127.0.0.0/8",  # the inside trusts the gateway
        main_cf={"mydestination": "inside.test", "relayhost": f"[127.0.0.1]:{outside_port}"},
    )


def _gateway(tmp_path: Path, port: int, **overrides):
    return running_gateway(
        tmp_path / "md",
        **{
            "relay.downstream": f"127.0.0.1:{port}",
            "domains.local": ["example.test", "inside.test"],
            **overrides,
        },
    )


@pytest.mark.parametrize("rcpt", ROUTING_FORMS)
def test_routing_form_refused_and_nothing_leaves(
    tmp_path: Path, postfix_instance, smtp_sink, rcpt: str
) -> None:
    outside = smtp_sink()
    pf = _inside(postfix_instance, outside.port)
    with _gateway(tmp_path, pf.port) as gw:
        rc, transcript = swaks(gw.port, "--from", "s@sender.test", "--to", rcpt)
        assert rc == 24, transcript  # no recipient accepted
        assert "<** 550 5.7.1 " in transcript, transcript

        # control: an existing recipient goes through the same chain and is delivered
        rc, transcript = swaks(gw.port, "--from", "s@sender.test", "--to", "alice@example.test")
        assert rc == 0, transcript
        pf.wait_for_messages("alice", timeout=30)
    # the inside never heard of the routing form, so it had nothing to relay
    assert "outside.test" not in pf.log_text()
    assert outside.messages() == []


def test_relay_network_routing_form_is_relayed_by_the_inside(
    tmp_path: Path, postfix_instance, smtp_sink
) -> None:
    """The harness shows the danger is real: a client in domains.relay_networks may use a
    routing form, and the trusting inside Postfix does relay it to the outside."""
    outside = smtp_sink()
    pf = _inside(postfix_instance, outside.port)
    with _gateway(tmp_path, pf.port, **{"domains.relay_networks": ["127.0.0.0/8"]}) as gw:
        rc, transcript = swaks(
            gw.port, "--from", "s@sender.test", "--to", "victim%outside.test@inside.test"
        )
        assert rc == 0, transcript
        (msg,) = outside.wait_for_messages(1, timeout=30)
    assert msg.rcpt_to == ["victim@outside.test"]


def test_callahead_never_vouches_for_a_routing_form(
    tmp_path: Path, postfix_instance, smtp_sink
) -> None:
    """Even for a client allowed to relay, call-ahead does not ask the trusting inside about a
    routing form (it would say yes, to relay it): the address is unknown, 550 5.1.1."""
    outside = smtp_sink()
    pf = _inside(postfix_instance, outside.port)
    overrides = {
        "directory.default": "callahead",
        "domains.relay_networks": ["127.0.0.0/8"],
    }
    with _gateway(tmp_path, pf.port, **overrides) as gw:
        rc, transcript = swaks(
            gw.port, "--from", "s@sender.test", "--to", "outside.test!victim@inside.test"
        )
        assert rc == 24, transcript
        assert "<** 550 5.1.1 " in transcript
        # control: an existing address is probed and delivered
        rc, transcript = swaks(gw.port, "--from", "s@sender.test", "--to", "alice@example.test")
        assert rc == 0, transcript
        pf.wait_for_messages("alice", timeout=30)
    assert "outside.test" not in pf.log_text()
    assert outside.messages() == []
