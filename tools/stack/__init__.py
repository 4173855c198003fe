"""Running the local stack: its processes (Temporal, providers, workers) and the run command."""
