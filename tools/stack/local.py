"""A whole local stack in one folder: Temporal on a SQLite file, the providers, workers.

With a codec port it also runs the codec server the Web UI decrypts payloads through. With
``versioning`` its workers run as Worker Deployment Versions, and each started worker's version
is made current (as a deploy step would), so orders reach it.

The run command, the crash tests, the benchmark and the demo all use this, so what people run
is what is tested. Every part can be SIGKILLed and started again on the same files and ports,
which is how the tests show that nothing is lost or done twice.
"""

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from temporalio.client import Client

from orders.client.temporal import codec_keys, connect
from orders.config import stripe_events, webhooks
from orders.config.settings import (
    DEFAULT_PROVIDERS_API_KEY,
    PAYMENT_RETURN_URL_ENV,
    VERSIONING_ENV,
    WorkerVersioning,
    ui_order_page,
)
from orders.security.codec_server import ui_origins
from orders.security.keys import (
    KEY_FILE_ENV,
    LOCAL_KEY_FILE_NAME,
    ensure_key_file,
    keys_configured,
    read_key_file,
)
from sandbox.admin_client import SandboxAdmin
from tools.stack.processes import (
    ROOT,
    ManagedProcess,
    StackError,
    free_port,
    set_current_version,
    start_codec_server,
    start_providers,
    start_temporal,
    start_webhook_receiver,
    start_worker,
    temporal_cli,
)

DRAINAGE_CONFIG = {
    "matching.wv.VersionDrainageStatusRefreshInterval": "1s",
    "matching.wv.VersionDrainageStatusVisibilityGracePeriod": "1s",
}
"""Temporal's dynamic config for a versioned local stack: an old version shows as drained a
second after it has no open pinned orders, instead of after the server's default 3 minutes."""


def _quiet(_: str) -> None:
    """The default progress callback: say nothing."""


@dataclass
class LocalStack:
    """Temporal, the providers and named workers, started and stopped together.

    ``data_dir`` holds Temporal's SQLite file, the providers' ledger and ``logs/``. Ports
    default to free ones, so several stacks (one per test) never collide.

    Encryption keys: when this process has none configured (``ORDERS_CODEC_KEYS`` or
    ``ORDERS_CODEC_KEY_FILE``), the stack generates ``data_dir/codec-keys.json`` (mode 0600) on
    its first start, reuses it after, and points its processes and this one at it.
    """

    data_dir: Path
    api_key: str = DEFAULT_PROVIDERS_API_KEY
    temporal_port: int = field(default_factory=free_port)
    providers_port: int = field(default_factory=free_port)
    ui_port: int | None = None
    """The Temporal Web UI's port; ``None`` runs Temporal headless."""
    codec_port: int | None = None
    """The codec server's port (the UI decrypts through it); ``None`` starts none."""
    worker_metrics_port: int | None = None
    """worker-1's Prometheus metrics port, worker-N's is this + N - 1; ``None``: free ports."""
    webhook_port: int | None = None
    """The webhook receiver's port; ``None`` starts none (the warehouse's events then wait)."""
    auto_ship_after: str | None = None
    """The warehouse ships each open picklist this long after it was made (``20s``); ``None``:
    only when asked."""
    versioning: bool = False
    """Workers run with Worker Versioning on (``ORDERS_WORKER_VERSIONING=on``), each as the
    version its environment gives; off, they poll unversioned whatever this shell says."""
    announce: Callable[[str], None] = _quiet
    """Called with a line of progress before each process starts."""
    temporal: ManagedProcess | None = None
    providers: ManagedProcess | None = None
    codec_server: ManagedProcess | None = None
    webhook_receiver: ManagedProcess | None = None
    workers: dict[str, ManagedProcess] = field(default_factory=dict)
    metrics_ports: dict[str, int] = field(default_factory=dict)
    """Each worker's metrics port, kept when it is started again."""
    worker_env: dict[str, dict[str, str]] = field(default_factory=dict)
    """Each worker's own variables (such as ``ORDERS_BUILD_ID``), kept when it starts again."""
    worker_sources: dict[str, Path] = field(default_factory=dict)
    """The sources a worker runs when not this repository's (another build), kept likewise."""
    current_build_id: str | None = None
    """The build id this stack last made current (versioning only)."""
    _codec_env: dict[str, str] | None = field(default=None, repr=False)

    @property
    def temporal_address(self) -> str:
        """Where workers and clients reach Temporal."""
        return f"127.0.0.1:{self.temporal_port}"

    @property
    def providers_url(self) -> str:
        """Where workers reach the payment gateway, mail service and warehouse."""
        return f"http://127.0.0.1:{self.providers_port}"

    @property
    def codec_url(self) -> str | None:
        """Where the UI and ``temporal --codec-endpoint`` decrypt payloads, if it runs."""
        return None if self.codec_port is None else f"http://127.0.0.1:{self.codec_port}"

    @property
    def key_file(self) -> Path:
        """The key file the stack generates when no keys are configured."""
        return (self.data_dir / LOCAL_KEY_FILE_NAME).resolve()  # children run from the root

    def codec_env(self) -> dict[str, str]:
        """Variables that give the stack's processes this process's encryption keys.

        Configured keys are inherited as they are. Without any, the stack's key file is
        generated (or reused) and set as ``ORDERS_CODEC_KEY_FILE`` for the children and, so its
        own clients read the same keys, for this process.
        """
        if self._codec_env is None:
            if keys_configured():
                self._codec_env = {}
            else:
                ensure_key_file(self.key_file)
                os.environ[KEY_FILE_ENV] = str(self.key_file)
                self._codec_env = {KEY_FILE_ENV: str(self.key_file)}
                if codec_keys().current != read_key_file(self.key_file).current:
                    raise StackError(
                        "this process already encrypts with other keys than the stack's "
                        f"{self.key_file}; set {KEY_FILE_ENV} before it starts"
                    )
        return self._codec_env

    @property
    def webhook_url(self) -> str | None:
        """Where the warehouse POSTs its events, if the stack runs a receiver."""
        if self.webhook_port is None:
            return None
        return f"http://127.0.0.1:{self.webhook_port}{webhooks.WEBHOOK_PATH}"

    @property
    def webhook_secret_file(self) -> Path:
        """The webhook secret file the stack generates when no secret is configured."""
        return (self.data_dir / webhooks.LOCAL_SECRET_FILE_NAME).resolve()

    @property
    def stripe_webhook_url(self) -> str | None:
        """Where the sandbox gateway POSTs Stripe's events, if the stack runs a receiver."""
        if self.webhook_port is None:
            return None
        return f"http://127.0.0.1:{self.webhook_port}{stripe_events.WEBHOOK_PATH}"

    def stripe_webhook_env(self) -> dict[str, str]:
        """The Stripe endpoint's signing secret, for the gateway and the receiver.

        Configured in this process's environment: inherited; else the stack's file
        (``data/stripe-webhook-secret``) is generated on the first start and reused after.
        """
        if stripe_events.load_secrets():
            return {}
        path = (self.data_dir / stripe_events.LOCAL_SECRET_FILE_NAME).resolve()
        webhooks.ensure_secret_file(path, "The Stripe events endpoint's")
        return {stripe_events.SECRET_FILE_ENV: str(path)}

    def webhook_env(self) -> dict[str, str]:
        """The shared webhook secret for the warehouse and the receiver.

        A secret configured in this process's environment is inherited as it is; else the
        stack's secret file is generated (mode 0600) on the first start and reused after.
        """
        if webhooks.load_secrets():
            return {}
        webhooks.ensure_secret_file(self.webhook_secret_file)
        return {webhooks.SECRET_FILE_ENV: str(self.webhook_secret_file)}

    @property
    def log_dir(self) -> Path:
        """Every process's log file is in here."""
        return self.data_dir / "logs"

    def admin(self) -> SandboxAdmin:
        """A client for the providers' ledger and fault injection (close it when done)."""
        return SandboxAdmin(self.providers_url, self.api_key)

    async def connect(self) -> Client:
        """A Temporal client for this stack with the project's data converter (and its keys)."""
        self.codec_env()
        return await connect(address=self.temporal_address)

    def start(self, workers: int = 1) -> "LocalStack":
        """Start Temporal, the providers and ``workers`` workers named worker-1, worker-2, ...

        With a codec port, the codec server starts first, so the UI is wired to it.
        """
        if self.codec_port is not None:
            self.start_codec_server()
        self.start_temporal()
        if self.webhook_port is not None:
            self.start_webhook_receiver()
        self.start_providers()
        for index in range(workers):
            self.start_worker(f"worker-{index + 1}")
        return self

    def start_temporal(self) -> ManagedProcess:
        """Start (or start again, on the same file and port) the Temporal dev server."""
        self.announce("Starting Temporal dev server ...")
        self.temporal = start_temporal(
            self.data_dir,
            self.temporal_port,
            self.ui_port,
            self.log_dir,
            self.codec_url,
            DRAINAGE_CONFIG if self.versioning else None,
        )
        return self.temporal

    def start_codec_server(self) -> ManagedProcess:
        """Start the codec server for the UI on ``ui_port`` (CORS allows only its origins)."""
        assert self.codec_port is not None, "the stack has no codec port"
        self.announce("Starting codec server ...")
        origins = ui_origins(self.ui_port) if self.ui_port is not None else ()
        self.codec_server = start_codec_server(
            self.codec_port, origins, self.log_dir / "codec-server.log", self.codec_env()
        )
        return self.codec_server

    def start_providers(self) -> ManagedProcess:
        """Start (or start again, on the same ledger and port) the sandbox providers."""
        self.announce("Starting providers ...")
        ledger = self.data_dir / "providers.sqlite3"
        env: dict[str, str] = {}
        if self.webhook_port is not None:
            env.update(self.webhook_env())
            env.update(self.stripe_webhook_env())
        if self.webhook_url is not None:
            env[webhooks.URL_ENV] = self.webhook_url
        if self.stripe_webhook_url is not None:
            env[stripe_events.URL_ENV] = self.stripe_webhook_url
        if self.auto_ship_after is not None:
            env[webhooks.AUTO_SHIP_ENV] = self.auto_ship_after
        self.providers = start_providers(
            ledger, self.providers_port, self.api_key, self.log_dir, env
        )
        return self.providers

    def start_webhook_receiver(self) -> ManagedProcess:
        """Start (or start again) the webhook receiver on ``webhook_port``."""
        assert self.webhook_port is not None, "the stack has no webhook port"
        self.announce("Starting webhook receiver ...")
        self.webhook_receiver = start_webhook_receiver(
            self.webhook_port,
            self.temporal_address,
            self.log_dir / "webhook-receiver.log",
            {**self.codec_env(), **self.webhook_env(), **self.stripe_webhook_env()},
        )
        return self.webhook_receiver

    @property
    def webhook_metrics_url(self) -> str | None:
        """Where Prometheus scrapes the webhook receiver, if it runs."""
        return (
            None if self.webhook_port is None else f"http://127.0.0.1:{self.webhook_port}/metrics"
        )

    def start_worker(
        self,
        name: str,
        env: dict[str, str] | None = None,
        make_current: bool = True,
        source: Path | None = None,
    ) -> ManagedProcess:
        """Start (or start again) the worker called ``name``; returns once it polls.

        ``env`` adds its own variables (``None``: those it had last time); ``source`` is the
        folder of another build's sources it runs (``None``: those it ran last time, by default
        this repository's). With versioning, its version is then made current unless
        ``make_current`` is false (a rollout that starts the new build beside the old one and
        switches later).
        """
        if env is not None:
            self.worker_env[name] = env
        if source is not None:
            self.worker_sources[name] = source
        own = self.worker_env.get(name, {})
        self.announce(f"Starting {name} ...")
        self.workers[name] = start_worker(
            self.temporal_address,
            self.providers_url,
            self.api_key,
            self.log_dir / f"{name}.log",
            name=name,
            extra_env={
                **self.codec_env(),
                **self.return_url_env(),
                VERSIONING_ENV: "on" if self.versioning else "off",
                **own,
            },
            metrics_port=self._metrics_port(name),
            source=self.worker_sources.get(name, ROOT),
        )
        if self.versioning and make_current:
            version = self.worker_version(name)
            if version.build_id != self.current_build_id:
                self.set_current_version(version.build_id, version.deployment_name)
        return self.workers[name]

    def return_url_env(self) -> dict[str, str]:
        """The customer's way back from 3-D Secure: the order's page in this stack's Web UI.

        Nothing when the stack runs no UI or the environment names its own return URL.
        """
        if self.ui_port is None or os.environ.get(PAYMENT_RETURN_URL_ENV, "").strip():
            return {}
        return {PAYMENT_RETURN_URL_ENV: ui_order_page(self.ui_port)}

    def worker_version(self, name: str) -> WorkerVersioning:
        """The deployment name and build id the worker called ``name`` runs as."""
        return WorkerVersioning.from_env({**os.environ, **self.worker_env.get(name, {})})

    def set_current_version(self, build_id: str, deployment_name: str | None = None) -> str:
        """Make this build the deployment's current version; returns what the CLI printed."""
        name = deployment_name or WorkerVersioning.from_env().deployment_name
        self.announce(f"Making {name}.{build_id} the current version ...")
        printed = set_current_version(self.temporal_address, name, build_id)
        self.current_build_id = build_id
        return printed

    def cli(self, *args: str) -> str:
        """Run the ``temporal`` CLI against this stack; returns its output, fails on an error."""
        done = temporal_cli(self.temporal_address, *args)
        if done.returncode != 0:
            raise StackError(f"temporal {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
        return done.stdout

    def worker_metrics_url(self, name: str) -> str:
        """Where Prometheus scrapes the worker called ``name``."""
        return f"http://127.0.0.1:{self._metrics_port(name)}/metrics"

    @property
    def providers_metrics_url(self) -> str:
        """Where Prometheus scrapes the providers' own counts."""
        return f"{self.providers_url}/metrics"

    def _metrics_port(self, name: str) -> int:
        if name not in self.metrics_ports:
            base = self.worker_metrics_port
            self.metrics_ports[name] = base + len(self.metrics_ports) if base else free_port()
        return self.metrics_ports[name]

    def stop_worker(self, name: str) -> int:
        """Stop the worker called ``name`` gracefully and forget it; returns its exit code.

        SIGTERM: it stops polling and finishes its running activities (SIGKILL after 10 s).
        ``start_worker(name)`` starts it again, on its metrics port and with its own variables.
        """
        process = self.workers.pop(name)
        self.announce(f"Stopping {name} ...")
        return process.stop()

    def kill_worker(self, name: str) -> float:
        """SIGKILL one worker; returns the wall-clock time of the kill."""
        return _kill(self.workers[name])

    def kill_temporal(self) -> float:
        """SIGKILL the Temporal server; returns the wall-clock time of the kill."""
        assert self.temporal is not None, "Temporal is not running"
        return _kill(self.temporal)

    def kill_webhook_receiver(self) -> float:
        """SIGKILL the webhook receiver; returns the wall-clock time of the kill."""
        assert self.webhook_receiver is not None, "the webhook receiver is not running"
        return _kill(self.webhook_receiver)

    def kill_providers(self) -> float:
        """SIGKILL the providers; returns the wall-clock time of the kill."""
        assert self.providers is not None, "the providers are not running"
        return _kill(self.providers)

    def exited(self) -> list[ManagedProcess]:
        """The processes that are no longer running."""
        return [process for process in self._processes() if not process.alive]

    def stop(self) -> None:
        """Stop everything; workers first, so they finish activities while the rest is up."""
        for process in reversed(self._processes()):
            if process.alive:
                self.announce(f"Stopping {process.name} ...")
                process.stop()

    def _processes(self) -> list[ManagedProcess]:
        parts = (
            self.codec_server,
            self.temporal,
            self.webhook_receiver,
            self.providers,
            *self.workers.values(),
        )
        return [process for process in parts if process is not None]

    def __enter__(self) -> "LocalStack":
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _kill(process: ManagedProcess) -> float:
    killed_at = time.time()
    process.kill()
    return killed_at
