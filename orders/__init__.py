"""The product beside the order story, in one package.

Models and rules, connecting to Temporal, the codec, metrics and tracing, the intake breaker and
the warehouse's webhook receiver. ``workflows/`` and ``activities/`` (the story and its steps),
``worker.py`` and ``starter.py`` stay at the top, as users know them.
"""
