"""Metrics and traces of real processes: what an operator scrapes and what a trace shows.

The trace test runs ``starter.py start``, ``worker.py`` and the providers as separate processes,
each exporting its spans with ``OTEL_TRACES_EXPORTER=console`` (configured from the standard
variables, as in production), and joins them: one order's spans must form one tree, from the
starter's span through the workflow and its activities to the providers' HTTP handlers.

The metrics test scrapes a real ``worker.py`` and the providers after orders with a decline, a
dropped answer and a 503, and finds the business metrics with the right labels and values.
"""

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from orders.client.orders import resolve_order, ship_order, start_order
from orders.domain.models import ResolveRequest, Shipment
from orders.domain.status import OperatorAction, OrderStatus
from sandbox.admin_client import SandboxAdmin
from tests.conftest import API_KEY
from tests.support import make_order, wait_for_status
from tools.stack.processes import (
    ROOT,
    ManagedProcess,
    free_port,
    spawn,
    wait_for_log,
    wait_for_port,
)

EXAMPLE = ROOT / "examples" / "order.json"


def _worker(
    client: Client, providers_url: str, log: Path, **env: str
) -> tuple[ManagedProcess, str]:
    """A ``worker.py`` process on a task queue of its own; returns it and the queue."""
    queue = f"orders-telemetry-{uuid.uuid4().hex[:8]}"
    process = spawn(
        "worker",
        [sys.executable, "worker.py"],
        log,
        {
            "TEMPORAL_ADDRESS": client.service_client.config.target_host,
            "PROVIDERS_URL": providers_url,
            "PROVIDERS_API_KEY": API_KEY,
            "ORDERS_TASK_QUEUE": queue,
            "PYTHONUNBUFFERED": "1",
            **env,
        },
    )
    wait_for_log(process, "worker polling", timeout=30.0)
    return process, queue


def _until(condition: Callable[[], Any], what: str, within: float = 30.0) -> Any:
    """Poll ``condition`` until it returns something truthy; fail naming ``what`` if never."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


# --- traces -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Span:
    """One exported span, as the console exporter printed it."""

    name: str
    trace_id: str
    span_id: str
    parent_id: str | None
    kind: str
    service: str
    attributes: dict[str, Any]


def console_spans(text: str) -> list[Span]:
    """The spans in a process's output: the console exporter prints each as a JSON object."""
    decoder, spans, index = json.JSONDecoder(), [], 0
    while (index := text.find("{\n", index)) != -1:
        if index and text[index - 1] != "\n":
            index += 1
            continue
        try:
            data, end = decoder.raw_decode(text, index)
        except json.JSONDecodeError:
            index += 1
            continue
        index = end
        if isinstance(data, dict) and "context" in data:
            spans.append(
                Span(
                    name=data["name"],
                    trace_id=data["context"]["trace_id"],
                    span_id=data["context"]["span_id"],
                    parent_id=data.get("parent_id"),
                    kind=data["kind"].removeprefix("SpanKind."),
                    service=data["resource"]["attributes"]["service.name"],
                    attributes=data.get("attributes") or {},
                )
            )
    return spans


def render_tree(spans: list[Span]) -> str:
    """The spans as an indented tree, children in the order they were exported."""
    children: dict[str | None, list[Span]] = {}
    for span in spans:
        children.setdefault(span.parent_id, []).append(span)
    lines: list[str] = []

    def walk(span: Span, depth: int) -> None:
        lines.append(f"{'  ' * depth}{span.name}  [{span.service}, {span.kind.lower()}]")
        for child in children.get(span.span_id, []):
            walk(child, depth + 1)

    for root in children.get(None, []):
        walk(root, 0)
    return "\n".join(lines)


PROVIDER_HANDLERS = {
    "POST /v1/payment_intents",
    "POST /v1/payment_intents/{intent}/confirm",
    "POST /warehouse/picklists",
    "POST /v1/payment_intents/{intent}/capture",
    "POST /resend/emails",
}
"""The handler span of each effect of an order that is authorized, picked, paid and confirmed."""


def test_one_order_is_one_trace_from_the_starter_to_the_providers_handlers(
    client: Client, tmp_path: Path
) -> None:
    console = {"OTEL_TRACES_EXPORTER": "console"}
    port = free_port()
    providers = spawn(
        "providers",
        [sys.executable, "-m", "sandbox", "--port", str(port), "--api-key", API_KEY,
         "--db", str(tmp_path / "ledger.sqlite3")],
        tmp_path / "providers.log",
        {"PYTHONUNBUFFERED": "1", **console},
    )  # fmt: skip
    worker: ManagedProcess | None = None
    try:
        wait_for_port(providers, port)
        worker, queue = _worker(
            client, f"http://127.0.0.1:{port}", tmp_path / "worker.log", **console
        )
        order_id = f"trace-{uuid.uuid4().hex[:10]}"
        started = subprocess.run(
            [sys.executable, "starter.py", "start", "--file", str(EXAMPLE), "--order-id", order_id],
            cwd=ROOT,
            env={
                **os.environ,
                "TEMPORAL_ADDRESS": client.service_client.config.target_host,
                "ORDERS_TASK_QUEUE": queue,
                **console,
            },
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert started.returncode == 0, started.stderr
        starter_spans = console_spans(started.stderr)
        roots = [s for s in starter_spans if s.parent_id is None]
        assert [s.name for s in roots] == ["starter.py start"], started.stderr
        trace_id = roots[0].trace_id

        def in_trace() -> list[Span] | None:
            spans = [
                span
                for span in console_spans(worker.output()) + console_spans(providers.output())
                if span.trace_id == trace_id
            ]
            handlers = {s.name for s in spans if s.service == "orders-providers"}
            return spans if handlers >= PROVIDER_HANDLERS else None

        spans = starter_spans + _until(in_trace, "the order's provider handler spans")
    finally:
        if worker is not None:
            worker.stop()
        providers.stop()

    tree = render_tree(spans)
    print(f"\nspan tree of order {order_id} (trace {trace_id}):\n{tree}")
    by_id = {span.span_id: span for span in spans}
    assert len(by_id) == len(spans), "a span was exported twice"
    assert [s.name for s in spans if s.parent_id is None] == ["starter.py start"], tree
    orphans = [s.name for s in spans if s.parent_id is not None and s.parent_id not in by_id]
    assert not orphans, f"spans whose parent is not in the trace: {orphans}\n{tree}"
    assert {s.service for s in spans} == {"orders-starter", "orders-worker", "orders-providers"}

    # Every span the worker made for this order (workflow and activities) is in this one trace.
    worker_spans = console_spans(worker.output())
    ours = [s for s in worker_spans if s.attributes.get("temporalWorkflowID") == order_id]
    assert ours and all(s.trace_id == trace_id for s in ours), tree

    # The capture's handler span (the money moves) leads back to the starter through every hop.
    handler = ("POST /v1/payment_intents/{intent}/capture", "orders-providers")
    capture = next(s for s in spans if (s.name, s.service) == handler)
    chain = [capture]
    while chain[-1].parent_id is not None:
        chain.append(by_id[chain[-1].parent_id])
    assert [(s.name, s.service) for s in chain] == [
        ("POST /v1/payment_intents/{intent}/capture", "orders-providers"),
        ("POST /v1/payment_intents/{intent}/capture", "orders-worker"),
        ("RunActivity:capture_payment", "orders-worker"),
        ("StartActivity:capture_payment", "orders-worker"),
        ("StartWorkflow:OrderWorkflow", "orders-starter"),
        ("starter.py start", "orders-starter"),
    ], tree
    # The workflow's own span hangs off the start too (the SDK's workflow spans are siblings).
    run = next(s for s in spans if s.name == "RunWorkflow:OrderWorkflow")
    assert by_id[run.parent_id or ""].name == "StartWorkflow:OrderWorkflow"
    assert capture.attributes["http.response.status_code"] == 200
    assert chain[1].kind == "CLIENT" and capture.kind == "SERVER"


# --- metrics ----------------------------------------------------------------------------------


Sample = tuple[str, dict[str, str], float]


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def scrape(url: str) -> list[Sample]:
    """Every sample of a Prometheus endpoint, named exactly as Prometheus stores it."""
    text = httpx.get(url, timeout=5).raise_for_status().text
    samples = []
    for line in text.splitlines():
        if match := _SAMPLE.match(line):
            name, labels, value = match.groups()
            samples.append((name, dict(_LABEL.findall(labels or "")), float(value)))
    return samples


def total(samples: list[Sample], name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    return sum(
        value
        for sample_name, sample_labels, value in samples
        if sample_name == name and labels.items() <= sample_labels.items()
    )


def names(samples: list[Sample]) -> set[str]:
    """The metric names (histograms as their ``_bucket``/``_count``/``_sum`` series)."""
    return {sample[0] for sample in samples}


async def test_a_worker_and_the_providers_export_the_business_metrics(
    client: Client, sandbox: SandboxAdmin, tmp_path: Path
) -> None:
    port = free_port()
    worker, queue = _worker(
        client, sandbox.base_url, tmp_path / "worker.log", ORDERS_METRICS_PORT=str(port)
    )
    worker_url = f"http://127.0.0.1:{port}/metrics"
    providers_url = f"{sandbox.base_url}/metrics"
    before = scrape(providers_url)
    try:
        assert f"metrics at {worker_url}" in worker.output()
        paid = make_order(currency="EUR")
        declined = make_order(currency="EUR", payment_method="pm_card_chargeDeclined")
        parked = make_order(currency="EUR")
        # The capture commits and its answer is lost: the retry gets it replayed. One email 503s.
        sandbox.set_faults(
            "payments", drop_next=1, key_prefix=f"{paid.id}:", key_suffix="payment-capture"
        )
        sandbox.set_faults("mail", fail_next=1, key_prefix=f"{paid.id}:")
        for order in (paid, declined):
            await start_order(client, order, queue)
        await wait_for_status(client, paid.id, OrderStatus.AWAITING_SHIPMENT)
        # The mail service refuses one order's confirmation (after its capture): that order
        # needs an operator, who cancels it, so its money is refunded. Set only now: a
        # service has one key_prefix, and this one would have moved paid's 503 onto parked.
        sandbox.set_faults("mail", refuse_next=1, key_prefix=f"{parked.id}:")
        await start_order(client, parked, queue)
        await ship_order(client, paid.id, Shipment(carrier="UPS", tracking_number="1Z999AA1"))
        await wait_for_status(client, paid.id, OrderStatus.COMPLETED)
        await wait_for_status(client, declined.id, OrderStatus.PAYMENT_DECLINED)
        await wait_for_status(client, parked.id, OrderStatus.NEEDS_ATTENTION)
        # One order's authorization runs out while its picklist waits for an operator:
        # operators are warned, then it winds down. Short-lived from here on only: the orders
        # above are authorized already.
        expiring = make_order(currency="EUR")
        sandbox.set_faults("payments", authorization_validity_s=4)
        sandbox.set_faults("warehouse", refuse_next=1, key_prefix=f"{expiring.id}:")
        await start_order(client, expiring, queue)
        await wait_for_status(client, expiring.id, OrderStatus.CANCELLED, within=30)
        assert sandbox.fired("warehouse", f"{expiring.id}:") == {"refuse": 1}
        # Every fault above fired, counted at the providers.
        assert sandbox.fired("payments", f"{paid.id}:") == {"drop": 1}
        assert sandbox.fired("mail", f"{paid.id}:") == {"fail": 1}
        assert sandbox.fired("mail", f"{parked.id}:") == {"refuse": 1}
        cancel = ResolveRequest(action=OperatorAction.CANCEL, reason="warehouse refused it")
        assert (await resolve_order(client, parked.id, cancel)).refund_id

        def finished() -> list[Sample] | None:
            # The SDK counts a workflow completed once its last task is done, just after the
            # order's own metric: wait for both.
            samples = scrape(worker_url)
            done = total(samples, "temporal_workflow_completed", task_queue=queue)
            return samples if total(samples, "orders_finished_total") == done == 4 else None

        samples = _until(finished, "every order counted as finished")
    finally:
        worker.stop()
    after = scrape(providers_url)

    # Business metrics, recorded by the workflow (replay-safe) and the activities.
    assert total(samples, "orders_started_total") == 4
    assert total(samples, "orders_finished_total", status="completed") == 1
    assert total(samples, "orders_finished_total", status="payment-declined") == 1
    assert total(samples, "orders_finished_total", status="cancelled") == 2
    assert total(samples, "orders_authorizations_expiring_total") == 1
    assert total(samples, "orders_authorizations_expired_total") == 1
    charged = total(samples, "orders_charged_minor_units_total", currency="EUR")
    assert charged == paid.total + parked.total
    assert total(samples, "orders_refunded_minor_units_total", currency="EUR") == parked.total
    assert total(samples, "orders_needs_attention_total", step="confirmation-email") == 1
    assert total(samples, "orders_needs_attention_total", step="picklist") == 1
    assert total(samples, "orders_needs_attention_total") == 2
    steps = (
        "payment-intent",
        "payment-confirm",
        "picklist",
        "payment-capture",
        "confirmation-email",
    )
    for step in steps:
        labels = {"step": step, "outcome": "completed", "task_queue": queue}
        assert total(samples, "orders_step_latency_ms_count", **labels) >= 1, step
    assert total(samples, "orders_step_latency_ms_count", step="payment-confirm", outcome="failed")
    errors = "orders_provider_errors_total"
    assert total(samples, errors, service="payments", kind="declined") == 1
    assert total(samples, errors, service="payments", kind="unavailable") == 1  # the drop
    assert total(samples, errors, service="payments", kind="replayed") == 1  # its retry
    assert total(samples, errors, service="mail", kind="unavailable") == 1  # the 503
    assert total(samples, errors, service="mail", kind="refused") == 1
    assert total(samples, "orders_provider_requests_total", service="payments") >= 6
    # The SDK's own metrics, with the schedule-to-start bucket the alert needs.
    for name in (
        "temporal_workflow_task_schedule_to_start_latency_bucket",
        "temporal_activity_schedule_to_start_latency_bucket",
    ):
        assert total(samples, name, le="200") >= 1, name
    assert total(samples, "temporal_workflow_completed", task_queue=queue) == 4

    # The providers' own counts (shared with other tests: compare before and after).
    def grew(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert grew("providers_requests_total", service="payments", method="POST", status="200") >= 3
    assert grew("providers_requests_total", service="payments", status="dropped") >= 1
    assert grew("providers_requests_total", service="payments", status="402") >= 1
    assert grew("providers_errors_total", service="mail", status="503") >= 1
    assert grew("providers_idempotent_replays_total", service="payments") >= 1
    assert _conflict(sandbox) == 409
    latest = scrape(providers_url)
    assert total(latest, "providers_conflicts_total", service="payments") >= 1

    _every_ops_metric_is_exported(names(samples) | names(latest))


def _conflict(sandbox: SandboxAdmin) -> int:
    """Send a request twice under one key while the first is held: the second gets a 409."""
    key = f"conflict-{uuid.uuid4().hex[:8]}:payment-intent"
    body = {"amount": "100", "currency": "eur", "payment_method": "pm_card_visa"}
    headers = {"Authorization": f"Bearer {API_KEY}", "Idempotency-Key": key}

    def post() -> int:
        url = f"{sandbox.base_url}/v1/payment_intents"
        return httpx.post(url, data=body, headers=headers, timeout=30).status_code

    sandbox.set_faults("payments", hold_next=1, key_prefix=key, key_suffix="")
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(post)
        sandbox.wait_held("payments", 1)
        second = post()
        sandbox.release("payments")
        assert first.result() == 200
    return second


def _every_ops_metric_is_exported(exported: set[str]) -> None:
    """Every metric the alert rules and the dashboard use is one a process really exports."""
    from tests.test_ops_rules import ONLY_ON_FAILURE, ops_metric_names

    missing = ops_metric_names() - exported - ONLY_ON_FAILURE
    assert not missing, f"ops files use metrics nothing exported: {sorted(missing)}"


@pytest.fixture(autouse=True)
def _no_otel_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Processes this module starts get no tracing settings but the ones it gives them."""
    for key in [k for k in os.environ if k.startswith("OTEL_")]:
        monkeypatch.delenv(key)
