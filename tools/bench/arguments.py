"""What the benchmarks' command lines share: a count refused clearly, a parser of rounds."""

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


def rounds_parser(
    description: str, per_round: tuple[str, int], in_flight: int, rounds_help: str = "rounds"
) -> argparse.ArgumentParser:
    """A command line of rounds: ``--rounds`` (5), ``--<per round>``, ``--in-flight``, counts.

    ``per_round``: what a round runs, and how many by default (``("orders", 100)``).
    """
    name, default = per_round
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--rounds", type=count, default=5, help=f"{rounds_help} (5)")
    parser.add_argument(
        f"--{name}", type=count, default=default, help=f"{name} per round ({default})"
    )
    parser.add_argument(
        "--in-flight", type=count, default=in_flight, help=f"at a time ({in_flight})"
    )
    return parser
