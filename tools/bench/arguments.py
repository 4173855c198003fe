"""Argument types the benchmarks share: a count refused clearly when it is not one."""

import argparse


def count(text: str) -> int:
    """An argparse type: a whole number of at least 1 (rounds, runs, orders, workflows)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value
