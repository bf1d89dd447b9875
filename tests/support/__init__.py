"""Helpers shared by the tests and the benchmarks (bench/ imports them from here).

Real peers, each on 127.0.0.1 in its own temp folder: ``postfix`` (a private Postfix as
downstream or sender), ``smtp_sink`` (Postfix's smtp-sink), ``peer_clients`` (swaks,
smtp-source), ``dnsmasq`` with the test world of ``dns_zone``, ``zone_server`` (a programmable
DNS server), ``slapd``; their pytest fixtures are in ``peer_fixtures`` and ``dns_fixtures``
(registered by tests/conftest.py). ``host``: free ports, binaries, processes.

In process: ``gateway`` (a mailmoat Gateway in a thread), SMTP test clients (``raw_client``
and ``sockets``: blocking; ``talk``: asyncio), ``waiting`` (the one way to wait for a
condition).
"""
