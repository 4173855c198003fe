"""Settings read from the environment, shared by every process."""
