"""Tests of the DNS layer (src/mailmoat/dns/), with a private dnsmasq (tests/support/dnsmasq.py)
serving the test zones of tests/support/dns_zone.py; the fixtures live in
tests/support/dns_fixtures.py."""
