"""Run the sandbox providers: ``python -m sandbox --port 8000 --db data/providers.sqlite3``."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

import uvicorn

from sandbox.app import create_app
from sandbox.faults import (
    AUTHORIZATION_VALIDITY_ENV,
    DEFAULT_AUTHORIZATION_VALIDITY_S,
    DEFAULT_RATE_LIMIT_PER_S,
    DEFAULT_SEARCH_LAG_MS,
    DEFAULT_SEARCH_RATE_LIMIT_PER_S,
    MAIL_KEY_WINDOW_ENV,
    MAIL_KEYLESS_ENV,
    MAIL_RATE_LIMIT_ENV,
    RATE_LIMIT_ENV,
    RESEND_KEY_WINDOW_S,
    SEARCH_LAG_ENV,
    SEARCH_RATE_LIMIT_ENV,
    MailBehaviour,
    RateLimits,
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line; each option falls back to a ``PROVIDERS_*`` variable."""
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__)
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
    parser.add_argument(
        "--mail-key-window-s",
        type=float,
        default=env(MAIL_KEY_WINDOW_ENV, str(RESEND_KEY_WINDOW_S)),
        help="how long the mail service remembers an Idempotency-Key, in seconds, at most "
        f"Resend's 24 hours (default {RESEND_KEY_WINDOW_S}; at run time: PUT /admin/faults/mail "
        '{"key_window_s": ...})',
    )
    parser.add_argument(
        "--mail-keyless",
        type=_yes_no,
        default=env(MAIL_KEYLESS_ENV, "0"),
        help="1: the mail service honours no key, as SES, SendGrid and Postmark (default 0)",
    )
    parser.add_argument(
        "--mail-rate-limit",
        type=float,
        default=env(MAIL_RATE_LIMIT_ENV, "0"),
        help="the mail service's requests per second before 429, as Resend's (its default is 2; "
        "here 0: none)",
    )
    args = parser.parse_args(argv)
    if min(args.rate_limit, args.search_rate_limit) < 0:
        parser.error("rate limits are requests per second: 0 (no limit) or more")
    if not 0 < args.mail_key_window_s <= RESEND_KEY_WINDOW_S:
        parser.error(f"--mail-key-window-s must be above 0 and at most {RESEND_KEY_WINDOW_S}")
    if args.mail_rate_limit < 0:
        parser.error("--mail-rate-limit must be 0 (no limit) or more")
    return args


def _yes_no(text: str) -> bool:
    """``1``/``true``/``yes`` or ``0``/``false``/``no``."""
    value = text.strip().lower()
    if value not in ("1", "true", "yes", "0", "false", "no", ""):
        raise argparse.ArgumentTypeError(f"expected 1 or 0, not {text!r}")
    return value in ("1", "true", "yes")


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
            mail_behaviour=MailBehaviour(
                args.mail_key_window_s, args.mail_keyless, args.mail_rate_limit
            ),
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
