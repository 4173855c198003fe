"""Activities: every call with an external effect, each guarded by an idempotency key."""
