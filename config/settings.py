"""Settings read from the environment, with defaults for the embedded local stack."""

import os
from dataclasses import dataclass

TASK_QUEUE = os.environ.get("ORDERS_TASK_QUEUE", "orders")
"""The task queue the order workflow and its activities run on."""

DEFAULT_TEMPORAL_ADDRESS = "localhost:7233"
DEFAULT_PROVIDERS_URL = "http://127.0.0.1:8000"
DEFAULT_PROVIDERS_API_KEY = "sk_test_sandbox"


@dataclass(frozen=True)
class ProviderSettings:
    """How workers reach the payment gateway, mail service and warehouse."""

    base_url: str = DEFAULT_PROVIDERS_URL
    api_key: str = DEFAULT_PROVIDERS_API_KEY
    request_timeout_seconds: float = 4.0
    """Below the activities' start-to-close timeout, so a slow call fails as a retryable
    transport error in the activity rather than as an activity timeout."""

    @classmethod
    def from_env(cls) -> "ProviderSettings":
        """Read ``PROVIDERS_URL`` and ``PROVIDERS_API_KEY``."""
        return cls(
            base_url=os.environ.get("PROVIDERS_URL", DEFAULT_PROVIDERS_URL),
            api_key=os.environ.get("PROVIDERS_API_KEY", DEFAULT_PROVIDERS_API_KEY),
        )
