"""Client side of the system: connecting to Temporal and the operations people run on orders."""
