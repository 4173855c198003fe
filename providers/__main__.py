"""Run the sandbox providers: ``python -m providers --port 8000 --db data/providers.sqlite3``."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

import uvicorn

from providers.app import create_app
from providers.faults import (
    AUTHORIZATION_VALIDITY_ENV,
    DEFAULT_AUTHORIZATION_VALIDITY_S,
    DEFAULT_RATE_LIMIT_PER_S,
    DEFAULT_SEARCH_LAG_MS,
    DEFAULT_SEARCH_RATE_LIMIT_PER_S,
    RATE_LIMIT_ENV,
    SEARCH_LAG_ENV,
    SEARCH_RATE_LIMIT_ENV,
    RateLimits,
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line; each option falls back to a ``PROVIDERS_*`` variable."""
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="python -m providers", description=__doc__)
    parser.add_argument("--host", default=env("PROVIDERS_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(env("PROVIDERS_PORT", "8000")))
    parser.add_argument("--db", default=env("PROVIDERS_DB", "data/providers.sqlite3"))
    parser.add_argument("--api-key", default=env("PROVIDERS_API_KEY", "sk_test_sandbox"))
    parser.add_argument(
        "--search-lag-ms",
        type=int,
        default=int(env(SEARCH_LAG_ENV, str(DEFAULT_SEARCH_LAG_MS))),
        help="how long the gateway's search lags its writes, as Stripe's does "
        f"(default {DEFAULT_SEARCH_LAG_MS}; at run time: PUT /admin/faults/payments "
        '{"search_lag_ms": ...})',
    )
    parser.add_argument(
        "--authorization-validity-s",
        type=float,
        default=float(env(AUTHORIZATION_VALIDITY_ENV, str(DEFAULT_AUTHORIZATION_VALIDITY_S))),
        help="how long a card authorization can be captured before the gateway cancels it, as "
        f"Stripe's capture_before (default {DEFAULT_AUTHORIZATION_VALIDITY_S}, 7 days; at run "
        'time: PUT /admin/faults/payments {"authorization_validity_s": ...})',
    )
    parser.add_argument(
        "--rate-limit",
        type=float,
        default=float(env(RATE_LIMIT_ENV, str(DEFAULT_RATE_LIMIT_PER_S))),
        help="the gateway account's reads, and separately writes, per second, as Stripe limits "
        f"them (default {DEFAULT_RATE_LIMIT_PER_S:g}, Stripe's test mode; 0: no limit; at run "
        'time: PUT /admin/faults/payments {"rate_limit_per_s": ...})',
    )
    parser.add_argument(
        "--search-rate-limit",
        type=float,
        default=float(env(SEARCH_RATE_LIMIT_ENV, str(DEFAULT_SEARCH_RATE_LIMIT_PER_S))),
        help="the gateway account's searches per second (default "
        f"{DEFAULT_SEARCH_RATE_LIMIT_PER_S:g}, Stripe's; 0: no limit; at run time: "
        '"search_rate_limit_per_s")',
    )
    args = parser.parse_args(argv)
    if min(args.rate_limit, args.search_rate_limit) < 0:
        parser.error("rate limits are requests per second: 0 (no limit) or more")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the app with uvicorn until interrupted."""
    args = parse_args(argv)
    uvicorn.run(
        create_app(
            args.db,
            args.api_key,
            args.search_lag_ms,
            authorization_validity_s=args.authorization_validity_s,
            rate_limits=RateLimits(args.rate_limit, args.search_rate_limit),
        ),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        # Held requests never finish on their own; don't let them block a shutdown.
        timeout_graceful_shutdown=2,
    )


if __name__ == "__main__":
    main()
