"""The upsert benchmark (``tools.bench.upserts``): its workload and its command line."""

import argparse
import subprocess
import sys
import uuid

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.worker import Worker

from tools.bench import arguments
from tools.bench.upserts import STEPS, TASK_QUEUE, UpsertingWorkflow, parse_args, step
from tools.stack.processes import ROOT


@pytest.mark.parametrize("upserts", [0, 2, 5])
async def test_each_kind_runs_the_same_steps_and_only_its_upserts(
    client: Client, upserts: int
) -> None:
    """The kinds differ in their upserts alone, so the difference is what an upsert costs."""
    queue = f"{TASK_QUEUE}-{uuid.uuid4().hex[:6]}"
    async with Worker(client, task_queue=queue, workflows=[UpsertingWorkflow], activities=[step]):
        handle = await client.start_workflow(
            UpsertingWorkflow.run, upserts, id=f"upserts-{uuid.uuid4()}", task_queue=queue
        )
        await handle.result()
    kinds = [event.event_type for event in (await handle.fetch_history()).events]
    assert kinds.count(EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES) == upserts
    assert kinds.count(EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED) == STEPS


def test_it_runs_from_the_command_line_and_prints_the_cost_of_one_upsert() -> None:
    command = [sys.executable, "-m", "tools.bench.upserts"]
    args = ["--rounds", "1", "--workflows", "3", "--in-flight", "3", "--upserts", "2"]
    done = subprocess.run([*command, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("0 upserts: median ") and lines[1].startswith("2 upserts: median ")
    assert lines[2].startswith("one upsert: ") and lines[2].endswith(" ms of server CPU")


def test_a_count_below_one_is_refused_clearly(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--rounds", "0"])
    assert exit_info.value.code == 2
    assert "argument --rounds: must be at least 1: '0'" in capsys.readouterr().err


@pytest.mark.parametrize("text", ["0", "-3", "two", "1.5"])
def test_a_count_is_a_whole_number_of_at_least_one(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as refused:
        arguments.count(text)
    assert repr(text) in str(refused.value)
    assert arguments.count("7") == 7
