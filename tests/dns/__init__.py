"""Tests of the DNS layer, with a private dnsmasq (tests/dns/server.py) serving the test zones
of tests/dns/zone.py; the fixtures live in tests/dns/fixtures.py."""
