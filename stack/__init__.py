"""Running the parts as processes: the local stack, and the process tests build on it."""
