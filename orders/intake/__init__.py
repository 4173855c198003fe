"""The intake breaker, in one place: no new orders while payments keep failing.

``contract`` (names, signals, the breaker's state and rules), ``workflow`` (the long-lived
breaker), ``activities`` (the worker's side: payment outcomes, the gateway probe) and
``client`` (what the command line and the starter ask of it).
"""
