"""Sandbox providers: a payment gateway, a mail service and a warehouse in one FastAPI app.

They stand in for the outside world. Every POST is idempotent (Stripe-like keys), every effect
is recorded in SQLite, and faults (errors, latency, dropped connections, held requests) can be
injected at run time so the order system's retries can be tested.
"""

from sandbox.app import create_app

__all__ = ["create_app"]
