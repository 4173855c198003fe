"""Worker Versioning: the settings, and a rollout of a second build while orders are in flight.

The rollout runs on real processes (``LocalStack(versioning=True)``): Temporal's dev server,
the providers and ``worker.py`` processes of two builds of the ``orders`` deployment. Build A
takes orders; some reach the wait for shipment, others are held mid-payment at the gateway.
Build B starts beside A and is made current with ``temporal worker deployment
set-current-version``; A is stopped while its captures are still held; the held captures
commit, the waiting orders are shipped, and every order completes on B with exactly one of each
effect (the checker). New orders run on B; A shows as drained. Then the rollback: A again,
made current again, and a new order runs on A.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from temporalio.common import VersioningBehavior

from config.settings import (
    BUILD_ID_ENV,
    DEFAULT_DEPLOYMENT_NAME,
    DEPLOYMENT_NAME_ENV,
    VERSIONING_ENV,
    VersioningError,
    WorkerVersioning,
    source_build_id,
)
from stack.processes import ROOT
from worker import deployment_config
from workflows.intake import IntakeWorkflow
from workflows.order import OrderWorkflow

# -- the settings --


def test_versioning_is_off_unless_switched_on() -> None:
    assert not WorkerVersioning.from_env({}).enabled
    assert deployment_config(WorkerVersioning.from_env({})) is None
    assert deployment_config(None) is None
    for on in ("on", "ON", "true", "1", "yes"):
        assert WorkerVersioning.from_env({VERSIONING_ENV: on}).enabled


def test_deployment_name_and_build_id_come_from_the_environment() -> None:
    versioning = WorkerVersioning.from_env(
        {VERSIONING_ENV: "on", DEPLOYMENT_NAME_ENV: "shop-orders", BUILD_ID_ENV: "2026-12-05.1"}
    )
    assert versioning.version == "shop-orders.2026-12-05.1"
    config = deployment_config(versioning)
    assert config is not None and config.use_worker_versioning
    assert config.version.deployment_name == "shop-orders"
    assert config.version.build_id == "2026-12-05.1"
    # Each workflow declares its own behaviour; the worker sets no default.
    assert config.default_versioning_behavior == VersioningBehavior.UNSPECIFIED


def test_the_default_build_id_is_a_hash_of_the_worker_sources(tmp_path: Path) -> None:
    defaults = WorkerVersioning.from_env({})
    assert defaults.deployment_name == DEFAULT_DEPLOYMENT_NAME == "orders"
    assert defaults.build_id == source_build_id() == source_build_id()
    assert re.fullmatch(r"src-[0-9a-f]{12}", defaults.build_id)
    (tmp_path / "workflows").mkdir()
    (tmp_path / "worker.py").write_text("print('a')\n")
    (tmp_path / "workflows" / "order.py").write_text("A = 1\n")
    before = source_build_id(tmp_path)
    (tmp_path / "workflows" / "order.py").write_text("A = 2\n")
    assert source_build_id(tmp_path) != before


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        (VERSIONING_ENV, "maybe", "give on or off"),
        (DEPLOYMENT_NAME_ENV, "orders.eu", "cannot contain '.'"),
        (BUILD_ID_ENV, "x" * 256, "at most 255 characters"),
    ],
)
def test_a_bad_versioning_setting_is_refused(name: str, value: str, message: str) -> None:
    with pytest.raises(VersioningError, match=re.escape(message)):
        WorkerVersioning.from_env({name: value})


def test_a_bad_versioning_setting_stops_the_worker_with_the_fix() -> None:
    env = {**os.environ, VERSIONING_ENV: "maybe"}
    done = subprocess.run(
        [sys.executable, "worker.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    assert f"{VERSIONING_ENV}='maybe': give on or off" in done.stderr
    assert "Traceback" not in done.stderr


def test_every_workflow_declares_auto_upgrade() -> None:
    for workflow_class in (OrderWorkflow, IntakeWorkflow):
        defn = getattr(workflow_class, "__temporal_workflow_definition")
        assert defn.versioning_behavior == VersioningBehavior.AUTO_UPGRADE
