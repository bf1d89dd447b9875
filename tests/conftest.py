"""Shared pytest configuration: registers the real-peer fixtures (tests/peers/fixtures.py)."""

pytest_plugins = ["tests.peers.fixtures"]
