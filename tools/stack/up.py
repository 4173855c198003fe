"""Bring up the whole local stack and keep it running until Ctrl-C.

Temporal's dev server (persisted under the data folder, Web UI on :8233), the codec server the
UI decrypts customer data through, the sandbox providers and one or more workers. Orders in
flight survive a stop: run it again and they resume.
"""

import argparse
import os
import shlex
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from orders.client.temporal import TemporalConnectionError, codec_keys, connect_config
from orders.config import webhooks
from orders.config.settings import DEFAULT_PROVIDERS_API_KEY, VersioningError
from orders.intake.contract import parse_duration
from orders.security.codec_server import DEFAULT_PORT as DEFAULT_CODEC_PORT
from orders.security.codec_server import TOKEN_ENV
from orders.security.keys import KEY_FILE_ENV, KEYS_ENV, LOCAL_KEY_FILE
from sandbox.faults import MAIL_RATE_LIMIT_ENV, RESEND_RATE_LIMIT_PER_S
from tools.stack.local import LocalStack
from tools.stack.processes import StackError


def _auto_ship_after(text: str) -> str | None:
    """``off`` (or ``0``) as ``None``, else a duration such as ``20s`` checked here."""
    if text.strip().lower() in ("off", "0"):
        return None
    try:
        parse_duration(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text.strip()


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run Temporal, the providers and a worker.")
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="default: ./data")
    parser.add_argument("--temporal-port", type=int, default=7233)
    parser.add_argument("--ui-port", type=int, default=8233)
    parser.add_argument("--providers-port", type=int, default=8000)
    parser.add_argument(
        "--codec-port", type=int, default=DEFAULT_CODEC_PORT, help="the codec server's port"
    )
    parser.add_argument(
        "--webhook-port",
        type=int,
        default=webhooks.DEFAULT_RECEIVER_PORT,
        help=f"the warehouse webhook receiver's port (default {webhooks.DEFAULT_RECEIVER_PORT})",
    )
    parser.add_argument(
        "--auto-ship-after",
        type=_auto_ship_after,
        default="20s",
        help="the warehouse ships each picklist this long after the order released it (paid), "
        "and reports it by webhook (default 20s; 'off': only from its page or API)",
    )
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument(
        "--versioning",
        choices=("on", "off"),
        default="on",
        help="run the workers with Worker Versioning, as deployment version "
        "orders.<build id>, and make that version current on start (default on; see "
        "docs/rollouts.md)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=9464,
        help="worker-1's Prometheus metrics port; worker-N gets it + N - 1 (default 9464)",
    )
    return parser.parse_args()


def _keys_line(stack: LocalStack) -> str:
    """Where the encryption keys are."""
    ring = codec_keys()
    return f"{ring.source} (current key {ring.current.key_id})"


def client_setup(temporal_port: int) -> list[str]:
    """The exact shell lines that point ``starter.py`` in another terminal at this stack.

    Read from this process's environment once the stack has set its keys: another terminal
    starts with the same variables, less what the stack set itself. Nothing is printed for
    what the CLI finds by itself: the keys in ``./data/codec-keys.json``, Temporal on
    ``localhost:7233`` in namespace ``default``.
    """
    env = os.environ
    lines = []
    if env.get(KEYS_ENV, "").strip():
        lines.append(f"# starter.py needs the same {KEYS_ENV} as this terminal")
    elif (key_file := env.get(KEY_FILE_ENV, "").strip()) and (
        Path(key_file).resolve() != LOCAL_KEY_FILE.resolve()
    ):
        lines.append(f"export {KEY_FILE_ENV}={shlex.quote(str(Path(key_file).resolve()))}")
    address = f"127.0.0.1:{temporal_port}"
    try:
        config = connect_config(None)
    except TemporalConnectionError:
        config = {}
    if config.get("target_host") not in (address, f"localhost:{temporal_port}"):
        lines.append(f"export TEMPORAL_ADDRESS={address}")
    if config.get("namespace", "default") != "default":
        lines.append("export TEMPORAL_NAMESPACE=default")
    return lines


def _metrics_lines(stack: LocalStack) -> str:
    """Every Prometheus endpoint of the stack (deploy/prometheus/local.yml scrapes them)."""
    lines = [f"{name:<15} {stack.worker_metrics_url(name)}" for name in stack.workers]
    lines.append(f"{'providers':<15} {stack.providers_metrics_url}")
    if stack.webhook_metrics_url:
        lines.append(f"{'webhooks':<15} {stack.webhook_metrics_url}")
    return "\n                    ".join(lines)


def _webhook_note(args: argparse.Namespace, stack: LocalStack) -> str:
    """Where the shared secret is, and when the warehouse ships by itself."""
    secret = os.environ.get(webhooks.SECRET_FILE_ENV) or (
        f"${webhooks.SECRET_ENV}"
        if os.environ.get(webhooks.SECRET_ENV)
        else str(stack.webhook_secret_file)
    )
    return f"secret {secret}; {_shipping(stack)}"


def _shipping(stack: LocalStack) -> str:
    auto = stack.auto_ship_after
    return f"{auto} after the order releases it" if auto else "from its page's Ship button"


def _versioning_line(stack: LocalStack) -> str:
    """Which deployment version the workers run as, if versioning is on."""
    if not stack.versioning:
        return "unversioned (--versioning off)"
    if not stack.workers:
        return "none started (--workers 0); each one started later runs versioned"
    version = stack.worker_version(next(iter(stack.workers)))
    describe = f"temporal worker deployment describe --name {version.deployment_name}"
    return f"deployment version {version.version}, current ({describe})"


def _banner(args: argparse.Namespace, stack: LocalStack) -> str:
    api_key = stack.api_key
    providers = f"http://127.0.0.1:{args.providers_port}"
    token = os.environ.get(TOKEN_ENV)
    codec_note = f"bearer token from ${TOKEN_ENV}" if token else "the Web UI decrypts through it"
    codec_auth = f' --codec-auth "Bearer ${TOKEN_ENV}"' if token else ""
    lines = client_setup(args.temporal_port)
    setup_note = ", first these lines, so starter.py finds this stack" if lines else ""
    setup = "".join(f"\n  {line}" for line in lines)
    return f"""
Durable orders is running.
  Temporal Web UI   http://localhost:{args.ui_port}
  Temporal gRPC     localhost:{args.temporal_port}
  Codec server      {stack.codec_url}  ({codec_note})
  Encryption keys   {_keys_line(stack)}
  Providers         {providers}/?api_key={api_key}
    payments        {providers}/payments/?api_key={api_key}
    mail            {providers}/mail/?api_key={api_key}
    warehouse       {providers}/warehouse/?api_key={api_key}
  Webhook receiver  {stack.webhook_url}  ({_webhook_note(args, stack)})
  Stripe events     {stack.stripe_webhook_url}  (the sandbox gateway's, signed as Stripe signs)
  Metrics           {_metrics_lines(stack)}
  Workers           {_versioning_line(stack)}
  Data and logs     {args.data_dir.resolve()}

Try it (in another terminal{setup_note}):{setup}
  .venv/bin/python starter.py start --file examples/order.json --order-id order-1001
  .venv/bin/python starter.py status order-1001
  # the warehouse ships it by webhook ({_shipping(stack)}); or report it yourself:
  .venv/bin/python starter.py ship order-1001 --carrier UPS --tracking 1Z999AA10123456784
  .venv/bin/temporal workflow show --address localhost:{args.temporal_port} \\
      --codec-endpoint {stack.codec_url}{codec_auth} --workflow-id order-1001

Press Ctrl-C to stop everything; run again to resume orders in flight.
"""


def main() -> int:
    """Start everything, then watch the children until Ctrl-C or one of them dies."""
    args = _parse_args()
    stopping = False

    def request_stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    # The mail service as strict as Resend's default (2 requests a second), as the compose demo
    # has it; the sandbox's own default (none) is for suites and benchmarks.
    os.environ.setdefault(MAIL_RATE_LIMIT_ENV, f"{RESEND_RATE_LIMIT_PER_S:g}")
    stack = LocalStack(
        args.data_dir,
        DEFAULT_PROVIDERS_API_KEY,
        temporal_port=args.temporal_port,
        providers_port=args.providers_port,
        ui_port=args.ui_port,
        codec_port=args.codec_port,
        worker_metrics_port=args.metrics_port,
        webhook_port=args.webhook_port,
        auto_ship_after=args.auto_ship_after,
        versioning=args.versioning == "on",
        announce=lambda line: print(line, flush=True),
    )
    with stack:
        try:
            stack.start(workers=args.workers)
        except (StackError, VersioningError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        print(_banner(args, stack), flush=True)
        while not stopping:
            if dead := stack.exited():
                for child in dead:
                    print(f"{child.name} exited unexpectedly:\n{child.log_tail()}", file=sys.stderr)
                return 1
            time.sleep(0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
