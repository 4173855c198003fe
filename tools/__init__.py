"""The tools around the product, never imported by it.

The local stack and run command (``stack``), the crash harness and its checker (``harness``),
the benchmarks (``bench``).
"""
