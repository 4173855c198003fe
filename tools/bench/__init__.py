"""Benchmarks: measured figures about the running system, not part of the test suite."""
