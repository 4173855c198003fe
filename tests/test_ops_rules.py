"""The operations files hold: promtool checks and unit-tests the alert rules, checks the scrape
configuration, and parses every query of the Grafana dashboard.

``promtool`` comes from Debian's ``prometheus`` package; ``scripts/setup-test-tools`` (run by
``./scripts/test``) installs it when missing. These tests fail, never skip, without it.
"""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
RULES = DEPLOY / "prometheus" / "alerts.yml"
RULE_TESTS = DEPLOY / "prometheus" / "alerts.test.yml"
SCRAPE_CONFIG = DEPLOY / "prometheus" / "local.yml"
DASHBOARD = DEPLOY / "grafana" / "orders-dashboard.json"

ONLY_ON_FAILURE = {"temporal_workflow_task_execution_failed", "orders_disputes_total"}
"""Metrics the ops files use that a process exports only once something failed: a workflow
task, or a customer's dispute (counted by ``workflows.dispute``, which only a Stripe event
starts; the telemetry test runs no receiver of Stripe's events)."""

_METRIC = re.compile(r"\b(?:orders|providers|temporal)_[a-z0-9_]+\b")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run promtool; fail clearly when it is not installed."""
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail(
            "promtool is missing: run scripts/setup-test-tools (as root it installs Debian's "
            "'prometheus' package), or apt-get install -y prometheus"
        )
    result = subprocess.run([binary, *args], capture_output=True, text=True, timeout=120)
    print(result.stdout, result.stderr)
    return result


def dashboard_queries() -> list[str]:
    """Every PromQL query of the dashboard, as Grafana sends it (``$__rate_interval`` = 5m)."""
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        target["expr"].replace("$__rate_interval", "5m")
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]


def ops_metric_names() -> set[str]:
    """The exported metrics the alert rules and the dashboard use (histograms as ``_bucket``)."""
    text = RULES.read_text() + "\n".join(dashboard_queries())
    return set(_METRIC.findall(text))


def test_alert_rules_pass_promtool_check() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 10 rules found" in result.stdout


def test_alert_rules_pass_their_unit_tests() -> None:
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_unit_test() -> None:
    alerts = set(re.findall(r"^\s*- alert: (\w+)", RULES.read_text(), re.MULTILINE))
    tested = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    assert alerts == tested
    assert {
        "PaymentFailureRateHigh",
        "OrdersNeedAttention",
        "WorkflowTaskFailures",
        "WorkflowTaskScheduleToStartHigh",
        "ActivityScheduleToStartHigh",
        "NoOrderCompleted",
        "OrdersWorkerDown",
        "OrdersNoWorkerUp",
    } <= alerts


def test_scrape_configuration_is_valid_and_loads_the_rules() -> None:
    result = promtool("check", "config", str(SCRAPE_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout
    config = SCRAPE_CONFIG.read_text()
    assert "job_name: orders-worker" in config and "job_name: orders-providers" in config


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    queries = dashboard_queries()
    assert len(queries) >= 15
    # promtool parses recording rules' expressions: one rule per query.
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{index}", "expr": query}
                    for index, query in enumerate(queries)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(json.dumps(rules))  # JSON is YAML
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_ops_files_use_the_project_metric_names() -> None:
    used = ops_metric_names()
    for name in (
        "orders_finished_total",
        "orders_needs_attention_total",
        "orders_charged_minor_units_total",
        "orders_refunded_minor_units_total",
        "orders_authorizations_expiring_total",
        "orders_step_latency_ms_bucket",
        "orders_provider_errors_total",
        "providers_requests_total",
        "temporal_workflow_task_schedule_to_start_latency_bucket",
        "temporal_activity_schedule_to_start_latency_bucket",
    ):
        assert name in used, name
