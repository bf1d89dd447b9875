"""Benchmarks and attack simulations (run by hand, not in CI; see README)."""
