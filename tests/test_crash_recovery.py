"""Exactly-once effects under crashes, restarts and network faults, on real processes.

Each test brings up its own Temporal dev server (on a SQLite file), providers (on their own
ledger) and ``worker.py`` processes in ``tmp_path`` on free ports, breaks something mid-flight
(see ``tools/stack/scenarios.py`` for how each break is timed), and ends with the checker: every
completed order was charged once and got one confirmation, one picklist and one shipped email;
no order was lost; a declined order was never charged. Everything is stopped afterwards, also
when a test fails; the processes' logs stay in ``tmp_path/logs``.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from orders.domain.status import OrderStatus, Step
from orders.security.keys import KEY_FILE_ENV, KEYS_ENV
from tools.harness.scenarios import ScenarioResult, run_scenario
from tools.stack.processes import ROOT

pytestmark = pytest.mark.processes

BOUNDARIES = {
    f"{Step.PICKLIST} held",  # the card was authorized
    f"{Step.PAYMENT_CAPTURE} held",  # the stock was reserved
    f"{Step.CONFIRMATION_EMAIL} held",  # the payment was captured
    "awaiting shipment",
}


def assert_exactly_once(
    result: ScenarioResult, completed: int, declined: int = 0, cancelled: int = 0
) -> None:
    """The checker passes, and the effects add up to exactly one of each per order.

    The checker judges each order on its own; these totals check the run as a whole.
    """
    assert result.violations == [], "\n".join(map(str, result.violations))
    expected = {OrderStatus.COMPLETED.value: completed}
    if declined:
        expected[OrderStatus.PAYMENT_DECLINED.value] = declined
    if cancelled:
        expected[OrderStatus.CANCELLED.value] = cancelled
    assert result.tally.statuses == expected
    counted = result.tally
    assert counted.lost == 0
    assert counted.charges - counted.refunds == counted.shipped_emails == completed
    assert counted.refunds <= cancelled  # only a cancelled order that was charged is refunded
    if not cancelled:
        assert counted.charges == counted.confirmation_emails == counted.picklists == completed


@pytest.mark.parametrize(
    "scenario", ["kill-at-step-boundaries", "kill-after-effect-committed"], ids=["held", "commit"]
)
async def test_worker_killed_at_every_step_boundary(tmp_path: Path, scenario: str) -> None:
    # held: the dead worker's request fails uncommitted, so the restarted worker acts once.
    # commit: the provider commits it after the worker died; the retry gets it replayed.
    result = await run_scenario(scenario, tmp_path)

    assert result.fired == {"requests held at the kill": 3}  # a capture, an email, a picklist
    assert_exactly_once(result, completed=4)
    assert set(result.labels.values()) == BOUNDARIES
    assert result.recoveries.keys() == result.labels.keys()  # each moved on after the kill


async def test_gateway_commits_then_drops_the_answer_again_and_again(tmp_path: Path) -> None:
    result = await run_scenario("gateway-drops-after-commit", tmp_path)

    assert result.fired == {"capture answers dropped": 30}
    assert_exactly_once(result, completed=10)
    assert result.retries >= 30  # at least one retry per lost answer, and no charge for any


async def test_storm_of_5xx_and_slow_answers_from_every_provider(tmp_path: Path) -> None:
    result = await run_scenario("provider-storm", tmp_path)

    assert result.fired["requests answered 503"] > 0
    assert_exactly_once(result, completed=16, declined=4)
    assert result.retries > 0


async def test_paused_worker_late_charge_is_absorbed_by_the_idempotency_key(
    tmp_path: Path,
) -> None:
    result = await run_scenario("paused-worker-late-call", tmp_path)

    assert result.fired == {"captures held at the pause": 1}
    assert_exactly_once(result, completed=5)
    paused = result.evidence.outcomes["paused-worker-late-call-001"]
    assert paused is not None and paused.transaction_id is not None
    assert result.evidence.ledger["paused-worker-late-call-001"].charges == 1


async def test_temporal_killed_mid_flight_resumes_every_order(tmp_path: Path) -> None:
    result = await run_scenario("kill-temporal", tmp_path)

    assert result.fired == {"activities held at the kill": 1}
    assert_exactly_once(result, completed=20)


async def test_providers_killed_mid_flight_lose_and_double_nothing(tmp_path: Path) -> None:
    result = await run_scenario("kill-providers", tmp_path)

    assert result.fired == {"emails held at the kill": 2, "picklist answers dropped": 2}
    assert_exactly_once(result, completed=20)
    assert result.retries > 0


async def test_200_orders_with_faults_cancels_and_two_worker_kills(tmp_path: Path) -> None:
    result = await run_scenario("load-with-faults", tmp_path)

    assert result.fired["requests answered 503"] > 0 and result.fired["answers dropped"] > 0
    # Each kill interrupted orders (read from their histories), so each was a real crash.
    assert result.fired["orders interrupted by kill 1"] > 0
    assert result.fired["orders interrupted by kill 2"] > 0
    assert_exactly_once(result, completed=170, declined=20, cancelled=10)
    assert result.kills == 2
    assert result.retries > 0


def test_the_recovery_benchmark_runs_twice_with_no_keys_configured() -> None:
    # As from a fresh clone: no keys set, so each run's stack would make its own key file.
    env = {k: v for k, v in os.environ.items() if k not in (KEYS_ENV, KEY_FILE_ENV)}
    command = [sys.executable, "-m", "tools.bench.recovery", "--runs", "2"]
    command += ["--scenario", "kill-at-step-boundaries"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)

    assert done.returncode == 0, done.stdout + done.stderr
    row = next(line for line in done.stdout.splitlines() if line.startswith("kill-at-step"))
    runs, kills, interrupted = row.split()[1:4]
    assert (runs, kills, interrupted) == ("2", "2", "8")


async def test_money_as_the_real_world_handles_it_survives_a_kill_in_each_wait(
    tmp_path: Path,
) -> None:
    result = await run_scenario("real-world-money", tmp_path)

    assert result.fired == {
        "authorizations expired": 1,
        "refunds failed": 1,
        "parcels shipped unpaid": 1,
    }
    assert result.kills == 3
    assert result.violations == [], "\n".join(map(str, result.violations))
    assert result.tally.statuses == {"completed": 4, "cancelled": 2}


async def test_a_stripe_event_receiver_killed_with_events_pending_loses_nothing(
    tmp_path: Path,
) -> None:
    result = await run_scenario("kill-stripe-receiver", tmp_path)

    # Four orders, three events each (needs action, authorized, captured): all sent while the
    # receiver was dead, all delivered once it was back, each taken by its order once.
    assert result.fired == {
        "events pending while the receiver was down": 12,
        "events delivered after the restart": 12,
        "events taken by their orders": 12,
    }
    assert result.violations == [], "\n".join(map(str, result.violations))
    assert result.tally.statuses == {"completed": 4}
