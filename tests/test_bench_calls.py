"""The provider-calls benchmark (``tools.bench.calls``): its calls and its command line."""

import subprocess
import sys

import pytest
from temporalio.testing import ActivityEnvironment

from orders.config.settings import ProviderSettings
from orders.domain.status import EmailTemplate
from sandbox.admin_client import SandboxAdmin
from tools.bench.calls import one_order, open_activities, parse_args
from tools.harness.drive import sample_order
from tools.stack.processes import ROOT


async def test_an_order_s_calls_leave_exactly_its_effects(sandbox: SandboxAdmin) -> None:
    """It measures the calls of an order that completes, once each: what a worker makes."""
    order = sample_order("bench-calls-1")
    settings = ProviderSettings(base_url=sandbox.base_url, api_key=sandbox.api_key)
    async with open_activities(settings) as activities:
        await one_order(activities, ActivityEnvironment(), order)
    effects = sandbox.effects(order.id)
    assert (effects.charges, effects.picklists, effects.refunds) == (1, 1, 0)
    assert effects.emails == {EmailTemplate.ORDER_CONFIRMATION: 1, EmailTemplate.ORDER_SHIPPED: 1}
    [picklist] = sandbox.list("/warehouse/picklists", order_id=order.id)
    assert picklist["hold"] is True and picklist["released"] is not None  # released once paid


def test_it_runs_from_the_command_line_and_prints_both_sides() -> None:
    command = [sys.executable, "-m", "tools.bench.calls", "--rounds", "1", "--orders", "2"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    caller, providers = done.stdout.splitlines()
    assert caller.startswith("caller: median ") and caller.endswith(")")
    assert providers.startswith("providers: median ")


def test_a_count_below_one_is_refused_clearly(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--orders", "0"])
    assert exit_info.value.code == 2
    assert "argument --orders: must be at least 1: '0'" in capsys.readouterr().err
