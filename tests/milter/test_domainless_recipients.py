"""Integrated mode: a recipient without a domain, as Postfix passes it to the milter, gets the
same routing refusal as one with a local domain (issue 10, the third red-team probe)."""

from __future__ import annotations

from tests.milter.test_session import CONTINUE, connected, service
from tests.support import milter_peer as mta
from tests.support.waiting import wait_for


async def test_domainless_routing_forms_are_refused() -> None:
    async with service(**{"directory.default": "none"}) as milter:
        peer = await connected(milter)
        assert await peer.ask(mta.strings(b"M", "<a@sender.test>")) == CONTINUE
        for recipient in ("<v%outside.test>", "<outside.test!v>"):
            command, text = await peer.ask(mta.strings(b"R", recipient))
            assert command == b"y" and text.startswith(b"550 5.7.1 Sender-specified"), recipient
        for recipient in ("<postmaster>", "<alice>"):
            assert await peer.ask(mta.strings(b"R", recipient)) == CONTINUE, recipient
        await peer.close()
        await wait_for(lambda: milter.stats.get("milter.rejected.relay_access") == 2)
