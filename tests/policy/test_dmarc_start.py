"""The public suffix list that DMARC's organizational domain needs is loaded when the gateway
starts: a few hundred milliseconds of CPU that, left to the first message, stalled every
session of the process (each worker's first DMARC evaluation, under attack too)."""

from __future__ import annotations

from mailmoat.policy import dmarc
from tests.support.dns_gateway import dns_gateway
from tests.support.fake_dns import world


async def test_the_list_is_loaded_before_the_first_connection() -> None:
    dmarc._psl.cache_clear()
    async with dns_gateway(world()):
        assert dmarc._psl.cache_info().currsize == 1


async def test_a_gateway_without_dmarc_does_not_load_it() -> None:
    dmarc._psl.cache_clear()
    async with dns_gateway(world(), **{"dmarc.action": "off", "dmarc.quarantine_action": "off"}):
        assert dmarc._psl.cache_info().currsize == 0
