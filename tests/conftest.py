"""Shared fixtures: a real Temporal dev server, real providers, and an in-process worker.

Everything runs on loopback from binaries installed by pip: nothing is downloaded.
"""

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from orders.client.exit import exit_now
from orders.client.temporal import DATA_CONVERTER
from orders.domain import search_attributes
from orders.security.keys import KEY_FILE_ENV, KEYS_ENV, generate_key
from sandbox.admin_client import SandboxAdmin
from sandbox.faults import RATE_LIMIT_ENV, SEARCH_RATE_LIMIT_ENV
from tests.support import running_worker
from tools.stack.processes import find_binary, free_port, start_providers

API_KEY = "sk_test_suite"

# Payloads are encrypted under a key made for this test run, never a developer's or the local
# stack's: this process (clients, test servers, the replayer) and every process it starts
# (workers, starter.py, the codec server) read it from here.
# Recorded histories (tests/test_replay.py) are encrypted under a committed key of their own
# (test data only), which every test run can also decrypt with; recording encrypts with it.
_HISTORIES_KEY = (Path(__file__).parent / "histories" / "codec-key.txt").read_text().strip()
_RUN_KEY = generate_key("test-run").encoded()
_KEYS = (
    [_HISTORIES_KEY, _RUN_KEY] if os.environ.get("RECORD_HISTORIES") else [_RUN_KEY, _HISTORIES_KEY]
)
os.environ[KEYS_ENV] = ",".join(_KEYS)
os.environ.pop(KEY_FILE_ENV, None)
# Every sandbox gateway a test starts has no rate limits unless the test sets them at run time
# (tests/test_rate_limits.py): Stripe's test-mode 25 per second would slow the suite's bursts.
os.environ[RATE_LIMIT_ENV] = os.environ[SEARCH_RATE_LIMIT_ENV] = "0"


@pytest.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    """A Temporal dev server (in memory) from the pip-installed ``temporal`` binary."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=find_binary("temporal"),
        port=free_port(),  # not the SDK's bind(0): see free_port
        search_attributes=search_attributes.ALL,
        data_converter=DATA_CONVERTER,
        ui=False,
        dev_server_log_level="error",
    )
    yield env
    await env.shutdown()


@pytest.fixture(scope="session")
def client(temporal_env: WorkflowEnvironment) -> Client:
    """A client with the project's data converter."""
    return temporal_env.client


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxAdmin]:
    """The sandbox providers as a real HTTP server process with its own ledger."""
    port = free_port()
    process = start_providers(
        tmp_path_factory.mktemp("providers") / "ledger.sqlite3", port, API_KEY
    )
    admin = SandboxAdmin(f"http://127.0.0.1:{port}", API_KEY)
    yield admin
    admin.close()
    process.stop()


@pytest.fixture(autouse=True)
def _no_faults_left(request: pytest.FixtureRequest) -> Iterator[None]:
    """Faults set by one test never leak into the next."""
    yield
    if "sandbox" in request.fixturenames:
        request.getfixturevalue("sandbox").reset_faults()


@pytest.fixture(scope="session")
async def task_queue(client: Client, sandbox: SandboxAdmin) -> AsyncIterator[str]:
    """A worker running in this process on its own task queue, for the whole session."""
    async with running_worker(client, sandbox) as queue:
        yield queue


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remember the run's real exit status for ``pytest_unconfigure``."""
    session.config.stash[_EXIT_STATUS] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Leave with pytest's own status after its summary is written (PITFALLS 2).

    The SDK's native runtime can abort or hang at interpreter exit, which would turn a green
    run red (or hang CI); ``os._exit`` after everything is flushed avoids it.
    """
    if _EXIT_STATUS in config.stash:
        exit_now(config.stash[_EXIT_STATUS])


_EXIT_STATUS = pytest.StashKey[int]()
