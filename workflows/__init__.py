"""Workflows: deterministic orchestration, free of I/O."""
