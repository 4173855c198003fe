"""The order domain: models, statuses, steps and idempotency keys.

Pure and deterministic, so workflow code can import it inside the sandbox.
"""
