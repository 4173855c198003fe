"""The intake breaker's contract: its policy, modes, evidence and status, and its workflow id.

Intake pauses (``starter.py start`` refuses new orders) when too many recent orders' payments
fail for reasons that are not declines, or when an operator pauses it. Workers judge their own
payments against ``IntakePolicy`` and trip the breaker; the breaker is a workflow that runs only
while intake is paused (``breaker_id``), so its state is durable and shows in the Temporal UI.
"""

import os
import re
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from temporalio.client import Client

WORKFLOW_TYPE = "IntakeWorkflow"
"""The breaker workflow's type name (the worker registers it under this name)."""
TRIP_SIGNAL = "trip"
"""Signal sent (with start) by a worker whose payments fail past the policy."""
PAUSE_SIGNAL = "pause"
"""Signal sent (with start) by an operator's pause."""
RESUME_UPDATE = "resume"
"""Update an operator's resume sends; refused when intake is already open."""
STATUS_MEMO = "intake"
"""Memo key of the breaker's ``IntakeStatus``: readable with a describe, no worker needed."""


def breaker_id(task_queue: str) -> str:
    """The breaker's workflow id: one breaker per task queue, so per deployment of the shop."""
    return f"intake-breaker-{task_queue}"


class IntakeMode(StrEnum):
    """Whether new orders are taken."""

    OPEN = "open"
    PAUSED_BY_BREAKER = "paused-by-breaker"
    PAUSED_BY_OPERATOR = "paused-by-operator"


class PaymentOutcome(StrEnum):
    """How one payment call of an order ended, as the breaker counts it."""

    OK = "ok"
    DECLINED = "declined"
    """The card was declined: a business outcome of a healthy gateway."""
    UNAVAILABLE = "unavailable"
    """5xx, a dropped connection, 409 or a locked object: retried (a rate limit is not counted)."""
    TIMEOUT = "timeout"
    """The gateway did not answer within the HTTP timeout: retried."""
    REFUSED = "refused"
    """The gateway refused the call for a reason retries cannot fix (not a decline)."""

    @property
    def is_failure(self) -> bool:
        """True for the failures the breaker counts: the gateway did not do its job."""
        return self in (PaymentOutcome.UNAVAILABLE, PaymentOutcome.TIMEOUT, PaymentOutcome.REFUSED)


class IntakePolicyError(ValueError):
    """An ``INTAKE_*`` setting is invalid; the message names it and says what is expected."""


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}


def parse_duration(text: str) -> timedelta:
    """``500ms``, ``30s``, ``5m``, ``1h`` as a ``timedelta``; ``ValueError`` otherwise."""
    match = _DURATION.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a duration such as 500ms, 30s, 5m or 1h")
    return timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def _flag(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{text!r} is not on or off")


Positive = Annotated[timedelta, Field(gt=timedelta(0))]


class IntakePolicy(BaseModel):
    """When the breaker trips and whether it closes on its own; one place, read by workers.

    Each worker judges the payments it ran itself: over the last ``window``, each order counts
    once with its latest payment outcome; when at least ``min_orders`` orders were seen and at
    least ``failure_rate`` of them failed (not a decline), intake pauses. While paused by the
    breaker (not by an operator) and ``auto_close`` is on, the gateway is probed every
    ``probe_interval``; after ``healthy_probes`` healthy probes in a row intake opens again.
    Environment: ``INTAKE_BREAKER``, ``INTAKE_FAILURE_RATE``, ``INTAKE_WINDOW``,
    ``INTAKE_MIN_ORDERS``, ``INTAKE_AUTO_CLOSE``, ``INTAKE_PROBE_INTERVAL``,
    ``INTAKE_HEALTHY_PROBES``, ``INTAKE_PROBE_TIMEOUT``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    """Off: workers never trip the breaker (operators can still pause intake)."""
    failure_rate: float = Field(0.5, gt=0, le=1)
    window: Positive = timedelta(minutes=5)
    min_orders: int = Field(20, ge=1)
    auto_close: bool = True
    probe_interval: Positive = timedelta(seconds=30)
    healthy_probes: int = Field(3, ge=1)
    probe_timeout: Positive = timedelta(seconds=3)
    """How long one probe of the gateway may take before it counts as unhealthy."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "IntakePolicy":
        """The defaults, overridden by the ``INTAKE_*`` variables that are set."""
        env = os.environ if env is None else env
        readers: dict[str, tuple[str, Callable[[str], object]]] = {
            "enabled": ("INTAKE_BREAKER", _flag),
            "failure_rate": ("INTAKE_FAILURE_RATE", float),
            "window": ("INTAKE_WINDOW", parse_duration),
            "min_orders": ("INTAKE_MIN_ORDERS", int),
            "auto_close": ("INTAKE_AUTO_CLOSE", _flag),
            "probe_interval": ("INTAKE_PROBE_INTERVAL", parse_duration),
            "healthy_probes": ("INTAKE_HEALTHY_PROBES", int),
            "probe_timeout": ("INTAKE_PROBE_TIMEOUT", parse_duration),
        }
        given: dict[str, object] = {}
        for field, (variable, read) in readers.items():
            if (text := env.get(variable)) is None or not text.strip():
                continue
            try:
                given[field] = read(text)
            except ValueError as err:
                raise IntakePolicyError(f"{variable}={text!r} is invalid: {err}") from None
        try:
            return cls.model_validate(given)
        except ValidationError as err:
            problems = "; ".join(
                f"{readers[str(e['loc'][0])][0]}: {e['msg']}" for e in err.errors() if e["loc"]
            )
            raise IntakePolicyError(f"invalid intake breaker settings: {problems}") from None

    def describe(self) -> str:
        """``50% of at least 20 orders over 5m`` as people read it."""
        return (
            f"{self.failure_rate:.0%} of at least {self.min_orders} orders' payments failing "
            f"over {human(self.window)}"
        )


class Evidence(BaseModel):
    """What a worker saw when it tripped the breaker: its window of payment outcomes."""

    model_config = ConfigDict(frozen=True)

    at: datetime
    orders: int
    """Orders with a payment outcome in the window."""
    failing: int
    """Of those, orders whose latest payment call failed (not a decline)."""
    kinds: dict[PaymentOutcome, int] = Field(default_factory=dict)
    """Failing orders by the kind of their latest failure."""
    window: timedelta
    last_failure: str = ""
    """The latest failure's message, for operators."""

    @property
    def rate(self) -> float:
        """The share of orders failing."""
        return self.failing / self.orders if self.orders else 0.0

    def describe(self) -> str:
        """``payments failing for 3 of 3 orders over the last 1m (unavailable 3)``."""
        kinds = ", ".join(f"{kind.value} {count}" for kind, count in sorted(self.kinds.items()))
        return (
            f"payments failing for {self.failing} of {self.orders} orders over the last "
            f"{human(self.window)}" + (f" ({kinds})" if kinds else "")
        )


class TripReport(BaseModel):
    """The ``trip`` signal: a worker's evidence and the policy it judged by."""

    model_config = ConfigDict(frozen=True)

    evidence: Evidence
    policy: IntakePolicy
    worker: str = ""
    """The worker's identity, for operators."""


class PauseRequest(BaseModel):
    """An operator's pause (the ``pause`` signal)."""

    model_config = ConfigDict(frozen=True)

    reason: Annotated[str, Field(min_length=1, max_length=500)]


class ResumeRequest(BaseModel):
    """An operator's resume (the ``resume`` update)."""

    model_config = ConfigDict(frozen=True)

    reason: Annotated[str, Field(max_length=500)] = ""


class ProbeResult(BaseModel):
    """One probe of the gateway while intake is paused by the breaker."""

    model_config = ConfigDict(frozen=True)

    at: datetime
    healthy: bool
    detail: str


class IntakeStatus(BaseModel):
    """Whether intake is open, since when, who decided and why; the breaker's read model."""

    task_queue: str
    mode: IntakeMode = IntakeMode.OPEN
    since: datetime | None = None
    """When the current mode began (for ``open``: when the last pause ended, if known)."""
    by: str = ""
    """``breaker`` or ``operator``: who set the current mode."""
    reason: str = ""
    paused_at: datetime | None = None
    """When the latest pause began (kept when an operator takes over from the breaker)."""
    evidence: Evidence | None = None
    """The latest evidence a worker sent, if the breaker tripped."""
    policy: IntakePolicy | None = None
    """The policy of the worker that tripped the breaker (decides auto-close)."""
    healthy_streak: int = 0
    """Healthy probes in a row so far."""
    probes: int = 0
    last_probe: ProbeResult | None = None

    @property
    def paused(self) -> bool:
        """True when new orders are refused."""
        return self.mode != IntakeMode.OPEN

    @property
    def closes_on_its_own(self) -> bool:
        """True when the breaker itself will open intake again once the gateway is healthy."""
        return (
            self.mode == IntakeMode.PAUSED_BY_BREAKER
            and self.policy is not None
            and self.policy.auto_close
        )

    def headline(self) -> str:
        """``intake paused by the breaker since 2025-05-01 12:00:03 UTC: <reason>``."""
        if not self.paused:
            return "intake open"
        who = "the breaker" if self.mode == IntakeMode.PAUSED_BY_BREAKER else "an operator"
        since = f" since {self.since:%Y-%m-%d %H:%M:%S %Z}".rstrip() if self.since else ""
        return f"intake paused by {who}{since}: {self.reason}"


def human(duration: timedelta) -> str:
    """``90s``, ``5m``, ``1h30m``, ``500ms``: a duration, short."""
    millis = round(duration.total_seconds() * 1000)
    if millis % 1000:
        return f"{millis}ms"
    seconds = millis // 1000
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "")
    return text + (f"{secs}s" if secs or not text else "")


class IntakeStart(BaseModel):
    """The breaker workflow's input: the status a continued run carries over, if any."""

    carried: IntakeStatus | None = None


_PAUSED_BY = {"operator": "an operator", "breaker": "the breaker"}


async def start_paused(client: Client, paused: IntakeStatus, signal: str, argument: object) -> None:
    """Pause intake by signal-with-start of the breaker: in effect once Temporal has it.

    The one way intake pauses, whether the breaker trips or an operator pauses it.
    """
    await client.start_workflow(
        WORKFLOW_TYPE,
        IntakeStart(),
        id=breaker_id(paused.task_queue),
        task_queue=paused.task_queue,
        start_signal=signal,
        start_signal_args=[argument],
        memo={STATUS_MEMO: paused},
        static_summary=f"intake paused by {_PAUSED_BY.get(paused.by, paused.by)}",
        static_details=paused.reason,
    )
