"""The warehouse webhooks' settings: the names both sides read, defined once.

The warehouse (the sandbox providers) signs each shipment event with the shared secret; the
receiver (``python -m orders.webhooks``) verifies it. Both read the secret from the same variables:

- ``ORDERS_WEBHOOK_SECRET``: one or more secrets, separated by commas;
- ``ORDERS_WEBHOOK_SECRET_FILE``: a file with one secret per line (``#`` starts a comment);
  ``./scripts/run`` generates ``data/webhook-secret`` (mode 0600) on its first run.

Rotation: the receiver accepts every listed secret; the sender signs with every listed secret
too (one ``v1=`` per secret, as Stripe does while a secret rolls). To rotate, put the new
secret first on both sides, then drop the old one once no event signed only with it is pending.
"""

import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from orders.security.private_files import write_private_file

SECRET_ENV = "ORDERS_WEBHOOK_SECRET"
"""The shared secret(s), comma separated; the first is the current one."""
SECRET_FILE_ENV = "ORDERS_WEBHOOK_SECRET_FILE"
"""A file of secrets, one per line (read when ``ORDERS_WEBHOOK_SECRET`` is unset)."""
LOCAL_SECRET_FILE_NAME = "webhook-secret"
"""The secret file the local stack generates in its data folder."""
SIGNATURE_HEADER = "Warehouse-Signature"
"""``t=<unix seconds>,v1=<hex HMAC-SHA256(secret, f"{t}.{raw body}")>`` (one v1 per secret)."""
MIN_SECRET_LENGTH = 16

# The receiver.
TOLERANCE_ENV = "ORDERS_WEBHOOK_TOLERANCE"
"""How old (or how far in the future) a signature's timestamp may be; default ``300s``."""
DEFAULT_TOLERANCE_S = 300.0
MAX_BODY_ENV = "ORDERS_WEBHOOK_MAX_BODY_BYTES"
"""The largest body the receiver reads; a larger one is refused with 413 before parsing."""
DEFAULT_MAX_BODY_BYTES = 65_536
HANDOFF_TIMEOUT_ENV = "ORDERS_WEBHOOK_HANDOFF_TIMEOUT"
"""How long the receiver waits for the order's answer before it answers 503; default ``10s``.
Keep it below the sender's ``PROVIDERS_WEBHOOK_TIMEOUT``."""
RETRY_AFTER_ENV = "ORDERS_WEBHOOK_RETRY_AFTER"
"""The ``Retry-After`` the receiver gives with a 409 or 503; default ``10s``."""
DEFAULT_RECEIVER_PORT = 8001
WEBHOOK_PATH = "/webhooks/warehouse"

# The sender (the sandbox warehouse).
URL_ENV = "PROVIDERS_WEBHOOK_URL"
"""Where the warehouse POSTs its events; unset: events wait in the outbox until one is set."""
RETRY_BASE_ENV = "PROVIDERS_WEBHOOK_RETRY_BASE"
"""The first retry's delay (doubles each attempt); default ``1s``."""
RETRY_MAX_ENV = "PROVIDERS_WEBHOOK_RETRY_MAX"
"""The longest delay between two attempts; default ``5m``."""
GIVE_UP_ENV = "PROVIDERS_WEBHOOK_GIVE_UP_AFTER"
"""An event still undelivered this long after it was made is marked failed; default ``72h``."""
TIMEOUT_ENV = "PROVIDERS_WEBHOOK_TIMEOUT"
"""How long one delivery waits for the receiver's answer; default ``15s``."""
AUTO_SHIP_ENV = "PROVIDERS_AUTO_SHIP_AFTER"
"""Ship every open picklist this long after it was made (``20s``); unset or ``off``: never."""


class WebhookSecretError(Exception):
    """No usable webhook secret is configured; the message says how to set one."""


def parse_secrets(text: str, source: str) -> tuple[str, ...]:
    """Secrets separated by commas or newlines; ``#`` lines are comments."""
    found = tuple(
        part.strip()
        for line in text.splitlines()
        if not line.strip().startswith("#")
        for part in line.split(",")
        if part.strip()
    )
    for secret in found:
        if len(secret) < MIN_SECRET_LENGTH or not secret.isascii() or not secret.isprintable():
            raise WebhookSecretError(
                f"a webhook secret in {source} is not usable: give at least "
                f"{MIN_SECRET_LENGTH} printable ASCII characters (`python -m orders.webhooks "
                "generate-secret` prints one)"
            )
    return found


def load_secrets(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The configured secrets, current first; empty when none is configured."""
    env = os.environ if environ is None else environ
    if inline := env.get(SECRET_ENV, "").strip():
        return parse_secrets(inline, SECRET_ENV)
    if file_name := env.get(SECRET_FILE_ENV, "").strip():
        path = Path(file_name).expanduser()
        try:
            text = path.read_text()
        except OSError as err:
            raise WebhookSecretError(f"{SECRET_FILE_ENV}={file_name}: {err}") from err
        return parse_secrets(text, str(path))
    return ()


def require_secrets(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The configured secrets; ``WebhookSecretError`` when there are none."""
    found = load_secrets(environ)
    if not found:
        raise WebhookSecretError(
            f"no webhook secret is configured: set {SECRET_ENV} (comma-separated for rotation) "
            f"or {SECRET_FILE_ENV}; ./scripts/run generates data/{LOCAL_SECRET_FILE_NAME}"
        )
    return found


def generate_secret() -> str:
    """A new random secret in Stripe's style (``whsec_`` and 32 random bytes, hex)."""
    return f"whsec_{secrets.token_hex(32)}"


def ensure_secret_file(path: Path, whose: str = "The warehouse webhooks'") -> Path:
    """The secret file at ``path``, generated with one new secret (mode 0600) if missing."""
    if not path.exists():
        note = f"# {whose} signing secret. Never commit it.\n"
        write_private_file(path, note + generate_secret() + "\n")
    parse_secrets(path.read_text(), str(path))  # a broken file fails here, where its path is known
    return path
