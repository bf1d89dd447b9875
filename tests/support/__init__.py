"""Helpers shared by the tests and the benchmarks (bench/ imports them from here).

Real peers, each on 127.0.0.1 in its own temp folder: ``postfix`` (a private Postfix as
downstream, sender or relay), ``smtp_sink`` (Postfix's smtp-sink), ``peer_clients`` (swaks,
smtp-source), ``dnsmasq`` with the test world of ``dns_zone``, ``zone_server`` (a programmable
DNS server), ``slapd``; their pytest fixtures are in ``peer_fixtures`` and ``dns_fixtures``
(registered by tests/conftest.py). ``host``: binaries, temp folders,
processes.

In process: ``gateway`` (a mailmoat Gateway in a thread), ``dns_gateway`` (a Gateway in the
test's loop with its DNS checks on), ``fake_downstream`` (the SMTP/LMTP server behind it that
records or counts, misbehaving on request), the SMTP test clients
(``raw_client``: blocking, on a plain socket; ``talk``: asyncio), ``fake_dns`` (a name server
over an in-memory zone, ``dns_records``), ``waiting`` (the one way to wait for a condition),
``clock`` (a clock the test moves), ``trace`` (mailmoat's Received: header), ``tls`` (a
self-signed certificate). ``ports``: free ports and listening sockets.
"""
