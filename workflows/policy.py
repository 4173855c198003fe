"""Timeouts and retries for every provider call, in one place.

A provider call takes well under a second; ``start_to_close`` is sized to the call (the HTTP
client gives up at 4 s) so an activity lost with a dead worker is retried within seconds.
Retries always resend the same idempotency key, so a retry can never act twice.
"""

from datetime import timedelta

from temporalio.common import RetryPolicy

PROVIDER_CALL_TIMEOUT = timedelta(seconds=5)

PROVIDER_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=500),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=0,  # unlimited: transient faults are retried until the provider answers
)
