"""A whole local stack in one folder: Temporal on a SQLite file, the providers, workers.

The run command, the crash tests, the benchmark and the demo all use this, so what people run
is what is tested. Every part can be SIGKILLed and started again on the same files and ports,
which is how the tests show that nothing is lost or done twice.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from temporalio.client import Client

from client.temporal import connect
from config.settings import DEFAULT_PROVIDERS_API_KEY
from providers.admin_client import SandboxAdmin
from stack.processes import (
    ManagedProcess,
    free_port,
    start_providers,
    start_temporal,
    start_worker,
)


def _quiet(_: str) -> None:
    """The default progress callback: say nothing."""


@dataclass
class LocalStack:
    """Temporal, the providers and named workers, started and stopped together.

    ``data_dir`` holds Temporal's SQLite file, the providers' ledger and ``logs/``. Ports
    default to free ones, so several stacks (one per test) never collide.
    """

    data_dir: Path
    api_key: str = DEFAULT_PROVIDERS_API_KEY
    temporal_port: int = field(default_factory=free_port)
    providers_port: int = field(default_factory=free_port)
    ui_port: int | None = None
    """The Temporal Web UI's port; ``None`` runs Temporal headless."""
    announce: Callable[[str], None] = _quiet
    """Called with a line of progress before each process starts."""
    temporal: ManagedProcess | None = None
    providers: ManagedProcess | None = None
    workers: dict[str, ManagedProcess] = field(default_factory=dict)

    @property
    def temporal_address(self) -> str:
        """Where workers and clients reach Temporal."""
        return f"127.0.0.1:{self.temporal_port}"

    @property
    def providers_url(self) -> str:
        """Where workers reach the payment gateway, mail service and warehouse."""
        return f"http://127.0.0.1:{self.providers_port}"

    @property
    def log_dir(self) -> Path:
        """Every process's log file is in here."""
        return self.data_dir / "logs"

    def admin(self) -> SandboxAdmin:
        """A client for the providers' ledger and fault injection (close it when done)."""
        return SandboxAdmin(self.providers_url, self.api_key)

    async def connect(self) -> Client:
        """A Temporal client for this stack with the project's data converter."""
        return await connect(address=self.temporal_address)

    def start(self, workers: int = 1) -> "LocalStack":
        """Start Temporal, the providers and ``workers`` workers named worker-1, worker-2, ..."""
        self.start_temporal()
        self.start_providers()
        for index in range(workers):
            self.start_worker(f"worker-{index + 1}")
        return self

    def start_temporal(self) -> ManagedProcess:
        """Start (or start again, on the same file and port) the Temporal dev server."""
        self.announce("Starting Temporal dev server ...")
        self.temporal = start_temporal(
            self.data_dir, self.temporal_port, self.ui_port, self.log_dir
        )
        return self.temporal

    def start_providers(self) -> ManagedProcess:
        """Start (or start again, on the same ledger and port) the sandbox providers."""
        self.announce("Starting providers ...")
        ledger = self.data_dir / "providers.sqlite3"
        self.providers = start_providers(ledger, self.providers_port, self.api_key, self.log_dir)
        return self.providers

    def start_worker(self, name: str) -> ManagedProcess:
        """Start (or start again) the worker called ``name``; returns once it polls."""
        self.announce(f"Starting {name} ...")
        self.workers[name] = start_worker(
            self.temporal_address,
            self.providers_url,
            self.api_key,
            self.log_dir / f"{name}.log",
            name=name,
        )
        return self.workers[name]

    def kill_worker(self, name: str) -> float:
        """SIGKILL one worker; returns the wall-clock time of the kill."""
        return _kill(self.workers[name])

    def kill_temporal(self) -> float:
        """SIGKILL the Temporal server; returns the wall-clock time of the kill."""
        assert self.temporal is not None, "Temporal is not running"
        return _kill(self.temporal)

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
        parts = (self.temporal, self.providers, *self.workers.values())
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
