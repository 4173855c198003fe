"""The error a person's request about an order raises.

Its message says what was wrong and how to fix it; its ``exit_code`` is what the command line
leaves with.
"""


class OrderError(Exception):
    """A request about an order that cannot be carried out; the message says why."""

    exit_code = 1
