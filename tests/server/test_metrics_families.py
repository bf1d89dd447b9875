"""/metrics has every family issue 13 names, summed over the supervisor and its workers of a
real `mailmoat serve`: messages delivered and the delivery's own deferrals (apart from the
checks' refusals), the downstream pool, and the DNS cache's hits and queries. Parsed with
prometheus_client's parser; the downstream is Postfix's smtp-sink, the DNS a real dnsmasq."""

from __future__ import annotations

import smtplib
from pathlib import Path

import pytest

from mailmoat.server.admin import request
from tests.server.test_admin_http import _samples
from tests.server.test_workers import served
from tests.support import dns_zone as zone
from tests.support.dns_gateway import message
from tests.support.dnsmasq import Dnsmasq
from tests.support.ports import free_port
from tests.support.smtp_sink import SmtpSink
from tests.support.waiting import wait_until

POOL = 3
PROCESSES = 4  # the supervisor (it runs up to LOCAL_SESSIONS itself), two workers, the lane


def _send(port: int) -> int:
    """One message from the test zone's good client; the end of data's reply code."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30, source_address=(zone.GOOD_IP, 0)) as c:
        c.ehlo(zone.GOOD_HELO)
        c.mail("a@sender.test")
        c.rcpt("alice@example.test")
        return c.data(message("a@sender.test"))[0]


@pytest.mark.peers
def test_metrics_count_delivery_the_pool_and_the_dns_cache(
    tmp_path: Path, dns_server: Dnsmasq
) -> None:
    sink_port = free_port()
    sink = SmtpSink(port=sink_port).start()
    settings = {
        "relay.downstream": f"127.0.0.1:{sink_port}",
        "relay.pool_size": POOL,
        "dns.checks": True,
        "dns.nameservers": [dns_server.address],
    }
    try:
        with served(tmp_path, **settings) as srv:

            def metrics() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
                status, body = request(str(srv.admin), "/metrics")
                assert status == 200
                return _samples(body)

            got = metrics()
            assert got[("mailmoat_downstream_pool_size", ())] == POOL * PROCESSES
            # One more message than there are processes: one of them meets its answers again.
            for _ in range(PROCESSES + 1):
                assert _send(srv.port) == 250
            wait_until(
                lambda: metrics().get(("mailmoat_messages_delivered_total", ())) == PROCESSES + 1
            )
            got = metrics()
            assert got[("mailmoat_messages_accepted_total", ())] == PROCESSES + 1
            assert got[("mailmoat_dns_cache_hits_total", ())] >= 1
            assert got[("mailmoat_dns_queries_total", ())] >= 1
            # the connections stay open for the next message (relay.idle_timeout)
            assert 1 <= got[("mailmoat_downstream_pool_idle", ())] <= POOL * PROCESSES
            assert got[("mailmoat_downstream_pool_open", ())] >= 1
            assert got[("mailmoat_downstream_pool_busy", ())] == 0
            assert got[("mailmoat_downstream_pool_waiting", ())] == 0
            sink.stop()
            assert _send(srv.port) == 451
            wait_until(lambda: metrics().get(("mailmoat_delivery_deferred_total", ())) == 1)
            got = metrics()
            assert got[("mailmoat_messages_deferred_total", ())] == 1
            assert got[("mailmoat_messages_delivered_total", ())] == PROCESSES + 1
    finally:
        sink.stop()
