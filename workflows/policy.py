"""Timeouts, retries and budgets for every step, and how each step's refusals are handled.

A provider call takes well under a second; ``start_to_close`` is sized to the call (the HTTP
client gives up at 4 s) so an activity lost with a dead worker is retried within seconds.
Retries always resend the same idempotency key, so a retry can never act twice.

Measured on the crash scenarios (``python -m tools.bench.recovery``): a SIGKILLed worker's order
moves on about 4.9 s later when an activity was in flight (2 s heartbeat timeout, 0.5 s backoff,
2 s sticky timeout) and about 2 s later when it was waiting for a signal. Without heartbeats it
was 7.5 s: start-to-close cannot go below the HTTP timeout, but the heartbeat timeout can.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from temporalio.common import RetryPolicy, VersioningBehavior

from activities.errors import OUT_OF_STOCK, PAYMENT_DECLINED
from orders.domain.models import OrderOptions
from orders.domain.status import OrderStatus, Step
from workflows.patches import LOCAL_PICKLIST_AND_CAPTURE, Patches

PROVIDER_CALL_TIMEOUT = timedelta(seconds=5)

LOCAL_TRY = RetryPolicy(maximum_attempts=1)
"""A step that runs locally first tries once in the worker; any retry is a regular activity."""

LOCAL_TRY_TIMEOUT = timedelta(seconds=2)
"""How long a local try may take before the step goes on as the regular activity (same key).

While a workflow task holds a local call, the order's updates wait for the task: a cancel
meeting a hung local call is taken when the try gives up, or when the SDK extends the task
at 80% of ``WORKFLOW_TASK_TIMEOUT`` (3.2 s), whichever comes first. 2 s keeps such a cancel
within about 2 s and is well above a provider's usual answer (the sandbox's take milliseconds,
Stripe's and Resend's well under a second); a slower answer is still taken, by the regular
activity, which the provider answers from the first request's result."""

PROVIDER_HEARTBEAT_TIMEOUT = timedelta(seconds=2)
"""A call that runs longer heartbeats (``activities.heartbeat``); when the beats stop because
the worker died, the activity is retried after this, not after the whole start-to-close. A
cancel reaches a running call through the same heartbeats."""

PROVIDER_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=500),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=0,  # bounded by each step's budget, not by a count
)

FOLLOW_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(hours=1),
    maximum_attempts=0,  # bounded by OrderOptions.refund_follow_limit
)
"""Asking how a pending refund ended: soon at first (the sandbox and many banks settle in
seconds), then hourly; a few dozen reads over the days a bank may take, none in history."""

AUTHENTICATION_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=0,  # bounded by OrderOptions.authentication_wait
)
"""Asking whether the customer completed 3-D Secure: a person takes seconds to minutes, so
soon at first, then every 30 s (under 3,000 reads in 24 h, none in history). Stripe's events
wake the wait at once; these reads are what the order relies on when events are lost."""

WORKFLOW_TASK_TIMEOUT = timedelta(seconds=4)
"""How long a worker may hold one of an order's workflow tasks (Temporal's default is 10 s).

A workflow task that runs a local-first step (``StepPolicy.local_first``) holds the call
inside it; when its worker dies, the task is retried on another worker after this timeout
and the call is re-run under the same key. 4 s keeps that recovery no slower than an
activity's (heartbeat timeout, backoff, sticky timeout: about 4.5 s measured); with 5 s the
crash scenarios' median went from 4.57 s to 4.79 s. A task running longer than 3.2 s (80% of
it) because a local call is slow is kept alive by the SDK, so a slow provider never times it
out; a worker bounded by ``WorkerCapacity`` runs its tasks in well under a second.
"""

STICKY_QUEUE_TIMEOUT = timedelta(seconds=2)
"""How long a workflow task waits on the queue of the worker that has the order cached.

A SIGKILLed worker never says goodbye, so Temporal keeps routing its orders' next workflow
tasks to its sticky queue until this runs out; then any worker takes them, replaying the
history. The SDK default of 10 s made every interrupted order wait 10 s longer. Measured:
15.9 s -> 7.4 s with an activity in flight, 10.1 s -> 2.1 s waiting for a signal, and a median
of 10.4 s -> 3.0 s under the 200-order load with two kills. A live but busy worker seldom
keeps a task waiting 2 s; when it does, the cost is one history replay on another worker,
never a wrong result.
"""


@dataclass(frozen=True)
class Outcome:
    """A provider refusal that ends the order as a business outcome instead of a fault."""

    status: OrderStatus
    label: str
    """Starts the failure reason, e.g. ``payment declined: insufficient_funds``."""
    detail_key: str
    """The field of the provider's error that names what happened (decline code, sku)."""


@dataclass(frozen=True)
class StepPolicy:
    """How one step reacts when its call fails.

    Retryable faults are retried for the order's step budget (``payment``: its payment budget;
    ``mail``: the step budget within the mail provider's key window; all stay below the
    idempotency key's lifetime, see ``OrderOptions``); a refusal listed in
    ``outcomes`` ends the order; anything else, and a budget run out, parks the order for an
    operator, who retries the step or cancels the order.
    """

    label: str
    payment: bool = False
    mail: bool = False
    """An email: its retries stay inside the mail provider's key window."""
    outcomes: Mapping[str, Outcome] = field(default_factory=dict)
    follows: bool = False
    """The step waits on the provider's own progress (a pending refund): it is asked again with
    ``FOLLOW_RETRY`` for the order's ``refund_follow_limit``, not its retry budget."""
    customer: bool = False
    """The step waits for the customer (3-D Secure): asked again with ``AUTHENTICATION_RETRY``
    until the deadline its caller gives."""
    local_first: bool = False
    """Try the call once as a local activity inside the workflow task, then (if it did not
    answer) as the regular activity under the same key. Saves a round trip through the server
    per call. A workflow task lost with its worker leaves no trace of a local call, and the task
    run again on another worker may take another path:

    - it may stop the order before that step (a cancel the lost task had not seen, taken even
      before the story resumes from the result the lost task resumed from), so the step's
      undo, if it has one, must run on any such stop, whether or not the lost call acted;
    - it may not see an update the lost task handled (an update lands in history only when its
      task completes), so no update may lead to the step or change what it sends.

    The payment intent qualifies (no money moves until the confirm, a regular activity); so do
    the confirmation, delay and shipped emails (never undone, sent the same under the same key,
    reached by activity results, timers and signals, which are in history first); the picklist
    (a cancel that finds the authorization under way takes it back, whether or not the story
    reached it: ``Picking.cover_a_lost_local_picklist``); the capture (its undo,
    ``Payment.undo``, is registered before the confirm, and the gateway answers its cancel of a
    captured intent with the charge, which is refunded); and the release. The farewell emails
    are not: a cancel update leads to them, and a lost task once sent "Nothing was charged" for
    an order its rerun went on to charge and refund."""
    local_since: str | None = None
    """The patch level (``workflows.patches``) from which the step runs local-first: orders
    started before it ran the step as a regular activity and replay so."""

    def runs_local_first(self, patches: Patches) -> bool:
        """Whether an order with ``patches`` tries this step as a local activity first."""
        return self.local_first and (self.local_since is None or patches.taken(self.local_since))

    def budget(self, options: OrderOptions) -> timedelta:
        """How long this step retries before it asks an operator."""
        if self.follows:
            return options.refund_follow_limit
        if self.payment:
            return options.payment_retry_budget
        return options.mail_retry_budget if self.mail else options.step_retry_budget

    @property
    def retry_policy(self) -> RetryPolicy:
        """How the step's activity is retried within its budget."""
        if self.customer:
            return AUTHENTICATION_RETRY
        return FOLLOW_RETRY if self.follows else PROVIDER_RETRY


_PAYMENT = "payment"
_ON_THE_WAY_EMAILS = (Step.CONFIRMATION_EMAIL, Step.DELAY_EMAIL, Step.SHIPPED_EMAIL)
_FAREWELL_EMAILS = (Step.DECLINE_EMAIL, Step.CANCELLATION_EMAIL, Step.OUT_OF_STOCK_EMAIL)
POLICIES: Mapping[Step, StepPolicy] = {
    # The intent moves no money: a confirm needs its id, and runs only as a regular activity,
    # whose command lands in history after the intent's result.
    Step.PAYMENT_INTENT: StepPolicy(_PAYMENT, payment=True, local_first=True),
    Step.PAYMENT_CONFIRM: StepPolicy(
        _PAYMENT,
        payment=True,
        outcomes={
            PAYMENT_DECLINED: Outcome(
                OrderStatus.PAYMENT_DECLINED, "payment declined", "decline_code"
            )
        },
    ),
    # Capturing moves money already authorized: nothing to decline, retried as payment is.
    # Its undo (Payment.undo) is registered before the confirm, the picklist's at the latest
    # when a cancel stops the order (Picking.cover_a_lost_local_picklist).
    Step.PAYMENT_CAPTURE: StepPolicy(
        _PAYMENT, payment=True, local_first=True, local_since=LOCAL_PICKLIST_AND_CAPTURE
    ),
    Step.PICKLIST: StepPolicy(
        Step.PICKLIST.value,
        outcomes={OUT_OF_STOCK: Outcome(OrderStatus.OUT_OF_STOCK, "out of stock", "sku")},
        local_first=True,
        local_since=LOCAL_PICKLIST_AND_CAPTURE,
    ),
    # Emails the story sends on its way; the farewell emails of a stopped order stay regular.
    **{step: StepPolicy(step.value, mail=True, local_first=True) for step in _ON_THE_WAY_EMAILS},
    **{step: StepPolicy(step.value, mail=True) for step in _FAREWELL_EMAILS},
    # Reached after the confirmation's result; it has no undo of its own (cancelling the order
    # at the warehouse takes back a released picklist as well as a held one).
    Step.PICKLIST_RELEASE: StepPolicy(Step.PICKLIST_RELEASE.value, local_first=True),
    Step.REFUND_OUTCOME: StepPolicy("refund", follows=True),
    # Failing 3-D Secure, or a card declined once authenticated, is a decline.
    Step.AUTHENTICATION: StepPolicy(
        "3-D Secure",
        payment=True,
        customer=True,
        outcomes={
            PAYMENT_DECLINED: Outcome(
                OrderStatus.PAYMENT_DECLINED, "payment declined", "decline_code"
            )
        },
    ),
}
"""Steps with their own rules; every other step has ``StepPolicy(step name)``."""


def policy_for(step: Step) -> StepPolicy:
    """The refusal policy of ``step``."""
    return POLICIES.get(step) or StepPolicy(step.value)


VERSIONING_BEHAVIOR = VersioningBehavior.AUTO_UPGRADE
"""How the order workflow and the intake breaker move between builds with Worker Versioning on:
each workflow task goes to the deployment's current version. Orders wait up to 14 days; pinned,
each build would have to keep running until its last order closed. So every change to the
commands a workflow issues stays behind ``workflow.patched``.

Set as the versioned worker's default (``worker.deployment_config``), not in ``@workflow.defn``:
a behaviour in the definition is sent with every workflow task, and Temporal refuses it from an
unversioned worker ("versioning behavior cannot be specified without deployment options being
set with versioned mode"), which would break every worker with versioning off."""
