"""Fast tier: the order workflow's branch logic, with the providers faked in memory.

The real ``OrderWorkflow`` runs in the project's sandbox on the time-skipping test server (the
pip-installed ``temporal-test-server``; nothing is downloaded). Its activities are stubs
registered under the real activity names: ``FakeProviders`` scripts what each one answers
(a result, a provider error, or a call that hangs until released or cancelled) and records
every call with its request, so each test asserts both the order's read model and exactly which
provider calls were made, in what order, under which idempotency keys. No HTTP, no real-time
sleeps: where workflow time must pass, the test server skips it.
"""

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar, cast

import pytest
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.errors import (
    OUT_OF_STOCK,
    PAYMENT_DECLINED,
    PROVIDER_REJECTED,
    PROVIDER_UNAVAILABLE,
)
from activities.heartbeat import heartbeating
from activities.mail import EmailReceipt, EmailRequest
from activities.payment import (
    CancelPaymentRequest,
    CapturePaymentRequest,
    Charge,
    ConfirmPaymentRequest,
    FollowAuthenticationRequest,
    FollowRefundRequest,
    PaymentIntent,
    PaymentIntentRequest,
    Refund,
    RefundRequest,
)
from activities.warehouse import (
    CancelPicklistRequest,
    Picklist,
    PicklistRequest,
    ReleasePicklistRequest,
)
from orders.client.orders import OrderRefused, cancel_order, order_status, start_order
from orders.domain import rules
from orders.domain.models import (
    CancelRequest,
    GatewayEvent,
    Order,
    OrderOptions,
    OrderView,
    ResolveRequest,
    Shipment,
)
from orders.domain.status import EmailTemplate, OperatorAction, OrderStatus, Step, StepState
from tests.support import make_order, start_time_skipping
from worker import sandboxed_runner
from workflows.authorization import AUTHORIZATION_CANCELED
from workflows.order import OrderWorkflow

UPS = Shipment(carrier="UPS", tracking_number="1Z999AA10123456784")
EARLY = Shipment(carrier="DHL", tracking_number="EARLY-0001")

# ---------------------------------------------------------------------------------------------
# The fake providers
# ---------------------------------------------------------------------------------------------

Behaviour = Callable[[Any], Awaitable[Any]]
"""One scripted answer of a stub: gets the request, returns the result or raises."""

T = TypeVar("T")

_DEFAULT = object()
"""Returned by a behaviour that hands over to the stub's default answer."""


def answer(value: Any) -> Behaviour:
    """Answer with ``value``."""

    async def behave(_request: Any) -> Any:
        return value

    return behave


def refuse(
    error_type: str,
    message: str,
    details: dict[str, Any] | None = None,
    *,
    non_retryable: bool = True,
) -> Behaviour:
    """Raise the ``ApplicationError`` the real activity raises for a provider's refusal."""

    async def behave(_request: Any) -> Any:
        extra = (details,) if details is not None else ()
        raise ApplicationError(message, *extra, type=error_type, non_retryable=non_retryable)

    return behave


def unavailable(service: str = "payments") -> Behaviour:
    """A retryable fault, as for a 503 or a dropped connection."""
    return refuse(
        PROVIDER_UNAVAILABLE,
        f"{service} answered 503 unavailable: try again",
        non_retryable=False,
    )


def hang(release: asyncio.Event | None = None) -> Behaviour:
    """Hang (heartbeating) until ``release`` is set, then answer as usual; ``None``: forever.

    Either way the call ends when the activity is cancelled: the heartbeats carry the cancel.
    """

    async def behave(_request: Any) -> Any:
        await heartbeating((release or asyncio.Event()).wait())
        return _DEFAULT

    return behave


@dataclass
class Call:
    """One call of a stub activity, as the workflow made it."""

    activity: str
    request: Any

    @property
    def key(self) -> str | None:
        """The idempotency key of the call."""
        return getattr(self.request, "idempotency_key", None)

    @property
    def adopt(self) -> bool:
        """Whether the call asked the provider to adopt an earlier attempt's effect."""
        return bool(getattr(self.request, "adopt_existing", False))


def _authorized(intent_id: str) -> PaymentIntent:
    """An intent the fake gateway authorized (charge ``ch_1``)."""
    return PaymentIntent(
        id=intent_id, amount=1, currency="USD", status="requires_capture", charge="ch_1"
    )


class FakeProviders:
    """In-memory payment gateway, mail service and warehouse, scripted per test.

    ``script(name, *behaviours)`` sets what the next calls of an activity do, one behaviour per
    call; the last one repeats. Unscripted calls succeed with plausible, stable ids
    (``pi_1``, ``ch_1``, ``re_1``, ``pl_1``, ``msg_<n>``); the workflow reads no amounts back,
    so the stubs answer ``1`` where the gateway would answer the order's total. The gateway
    authorizes (``authorize_payment``, the intent in ``requires_capture`` with its charge
    ``ch_1`` held, not taken) and captures (``capture_payment``).
    """

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._scripts: dict[str, list[Behaviour]] = {}
        self._changed = asyncio.Condition()

    def script(self, name: str, *behaviours: Behaviour) -> None:
        """Script the next calls of ``name``; no behaviours: back to the default answers."""
        self._scripts[name] = list(behaviours)

    def activities(self) -> list[Callable[..., Any]]:
        """The stubs to register on a worker."""
        return [
            self.create_payment_intent,
            self.authorize_payment,
            self.capture_payment,
            self.cancel_payment,
            self.refund_payment,
            self.follow_refund,
            self.follow_authentication,
            self.send_email,
            self.send_picklist,
            self.release_picklist,
            self.cancel_picklist,
        ]

    def of(self, name: str) -> list[Call]:
        """The calls of one activity, in order."""
        return [call for call in self.calls if call.activity == name]

    def log(self) -> list[tuple[str, str | None]]:
        """``(activity, idempotency key)`` of every call, in order."""
        return [(call.activity, call.key) for call in self.calls]

    def emails(self) -> list[EmailRequest]:
        """Every email the workflow asked for, in order."""
        return [call.request for call in self.of("send_email")]

    async def called(self, name: str, times: int = 1, within: float = 10.0) -> Call:
        """Wait until ``name`` was called ``times`` times; returns that call."""
        try:
            async with asyncio.timeout(within), self._changed:
                await self._changed.wait_for(lambda: len(self.of(name)) >= times)
        except TimeoutError:
            raise AssertionError(f"{name} not called {times}x; calls: {self.log()}") from None
        return self.of(name)[times - 1]

    async def _answer(self, name: str, request: Any, default: Callable[[], T]) -> T:
        async with self._changed:
            self.calls.append(Call(name, request))
            self._changed.notify_all()
        script = self._scripts.get(name)
        behaviour = (script.pop(0) if len(script) > 1 else script[0]) if script else None
        result = await behaviour(request) if behaviour else _DEFAULT
        return default() if result is _DEFAULT else cast(T, result)

    @activity.defn(name="create_payment_intent")
    async def create_payment_intent(self, request: PaymentIntentRequest) -> PaymentIntent:
        return await self._answer(
            "create_payment_intent",
            request,
            lambda: PaymentIntent(id="pi_1", amount=request.amount, currency=request.currency),
        )

    @activity.defn(name="authorize_payment")
    async def authorize_payment(self, request: ConfirmPaymentRequest) -> PaymentIntent:
        return await self._answer(
            "authorize_payment",
            request,
            lambda: _authorized(request.intent_id),
        )

    @activity.defn(name="capture_payment")
    async def capture_payment(self, request: CapturePaymentRequest) -> Charge:
        return await self._answer(
            "capture_payment",
            request,
            lambda: Charge(id="ch_1", payment_intent=request.intent_id, amount=1, currency="USD"),
        )

    @activity.defn(name="cancel_payment")
    async def cancel_payment(self, request: CancelPaymentRequest) -> PaymentIntent:
        return await self._answer(
            "cancel_payment",
            request,
            lambda: PaymentIntent(
                id=request.intent_id, amount=1, currency="USD", status="canceled"
            ),
        )

    @activity.defn(name="refund_payment")
    async def refund_payment(self, request: RefundRequest) -> Refund:
        return await self._answer("refund_payment", request, lambda: Refund(id="re_1", amount=1))

    @activity.defn(name="follow_refund")
    async def follow_refund(self, request: FollowRefundRequest) -> Refund:
        return await self._answer(
            "follow_refund", request, lambda: Refund(id=request.refund_id, amount=1)
        )

    @activity.defn(name="follow_authentication")
    async def follow_authentication(self, request: FollowAuthenticationRequest) -> PaymentIntent:
        return await self._answer(
            "follow_authentication",
            request,
            lambda: _authorized(request.intent_id),
        )

    @activity.defn(name="send_email")
    async def send_email(self, request: EmailRequest) -> EmailReceipt:
        number = len(self.of("send_email")) + 1
        return await self._answer("send_email", request, lambda: EmailReceipt(id=f"msg_{number}"))

    @activity.defn(name="send_picklist")
    async def send_picklist(self, request: PicklistRequest) -> Picklist:
        return await self._answer("send_picklist", request, lambda: Picklist(id="pl_1"))

    @activity.defn(name="release_picklist")
    async def release_picklist(self, request: ReleasePicklistRequest) -> Picklist:
        return await self._answer(
            "release_picklist", request, lambda: Picklist(id=request.picklist_id)
        )

    @activity.defn(name="cancel_picklist")
    async def cancel_picklist(self, request: CancelPicklistRequest) -> Picklist | None:
        return await self._answer(
            "cancel_picklist", request, lambda: Picklist(id=request.picklist_id or "pl_1")
        )


# ---------------------------------------------------------------------------------------------
# The environment: a test server, a worker and a task queue of its own for each test
# ---------------------------------------------------------------------------------------------
#
# The test server's clock is global, and the server holds a time-skipping lock for every
# scheduled activity until it completes, fails or is cancelled. A call still hanging when its
# order ends (a prompt cancel does not wait for it) never releases its lock, so time would no
# longer skip for any later test. At about 0.1 s a start, each test gets its own server.


@dataclass
class Orders:
    """Orders of one test: its environment, worker's task queue, fake providers, and helpers."""

    env: WorkflowEnvironment
    fake: FakeProviders
    task_queue: str

    @property
    def client(self) -> Client:
        return self.env.client

    async def start(self, options: OrderOptions | None = None) -> Order:
        order = make_order()
        await start_order(self.client, order, self.task_queue, options)
        return order

    def handle(self, order: Order) -> WorkflowHandle[OrderWorkflow, OrderView]:
        return self.client.get_workflow_handle_for(OrderWorkflow.run, order.id)

    async def until(self, order: Order, status: OrderStatus, within: float = 10.0) -> OrderView:
        """Query the order until it has ``status``; no workflow time is skipped meanwhile."""
        view = None
        try:
            async with asyncio.timeout(within):
                while True:
                    view = await order_status(self.client, order.id)
                    if view.status == status:
                        return view
                    await asyncio.sleep(0.02)
        except TimeoutError:
            raise AssertionError(f"{order.id} never {status.value}; last: {view}") from None

    async def cancel(self, order: Order, reason: str = "customer changed their mind") -> OrderView:
        return await self.handle(order).execute_update(
            OrderWorkflow.cancel, CancelRequest(reason=reason)
        )

    async def resolve(
        self, order: Order, action: OperatorAction, reason: str | None = None
    ) -> OrderView:
        return await self.handle(order).execute_update(
            OrderWorkflow.resolve, ResolveRequest(action=action, reason=reason)
        )

    async def ship(self, order: Order, shipment: Shipment = UPS) -> None:
        """The warehouse's signal, sent raw (the client would refuse an early one itself)."""
        await self.handle(order).signal(OrderWorkflow.warehouse_shipped, shipment)

    async def refusal(self, update: Awaitable[OrderView]) -> str:
        """The message a validator refused ``update`` with."""
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await update
        return str(refused.value.cause)


@pytest.fixture
async def orders() -> AsyncIterator[Orders]:
    env = await start_time_skipping()
    try:
        fake = FakeProviders()
        queue = f"logic-{uuid.uuid4().hex[:8]}"
        async with Worker(
            env.client,
            task_queue=queue,
            workflows=[OrderWorkflow],
            activities=fake.activities(),
            workflow_runner=sandboxed_runner(env.client.data_converter),
        ):
            yield Orders(env, fake, queue)
    finally:
        await env.shutdown()


def steps(view: OrderView) -> list[tuple[Step, StepState]]:
    """The order's timeline as ``(step, state)`` pairs."""
    return [(line.step, line.state) for line in view.timeline]


def key(order: Order, step: Step, attempt: int = 1) -> str:
    """The idempotency key the workflow must use (spelled out, not computed by the code)."""
    return f"{order.id}:{step.value}" + (f":attempt-{attempt}" if attempt > 1 else "")


def sent_once_each(log: list[tuple[str, str | None]]) -> list[tuple[str, str | None]]:
    """The log with a call repeated at once under the same key shown once.

    A local try that gives up on a hung provider goes on as the regular activity under the
    same key; whether that retry starts before a cancel cuts it short is a race, and either
    way the provider acts once per key.
    """
    return [call for i, call in enumerate(log) if i == 0 or log[i - 1] != call]


DONE, FAILED = StepState.COMPLETED, StepState.FAILED


# ---------------------------------------------------------------------------------------------
# Stories
# ---------------------------------------------------------------------------------------------


async def test_happy_path_runs_each_step_once_under_its_own_key(orders: Orders) -> None:
    order = await orders.start()
    waiting = await orders.until(order, OrderStatus.AWAITING_SHIPMENT)
    assert (waiting.transaction_id, waiting.picklist_id) == ("ch_1", "pl_1")

    await orders.ship(order)
    view = await orders.handle(order).result()

    assert view.status == OrderStatus.COMPLETED
    assert (view.transaction_id, view.payment_intent_id, view.shipment) == ("ch_1", "pi_1", UPS)
    assert (view.refund_id, view.failure_reason, view.attention_reason) == (None, None, None)
    assert steps(view) == [
        (Step.PAYMENT_INTENT, DONE),
        (Step.PAYMENT_CONFIRM, DONE),
        (Step.PICKLIST, DONE),
        (Step.PAYMENT_CAPTURE, DONE),
        (Step.CONFIRMATION_EMAIL, DONE),
        (Step.PICKLIST_RELEASE, DONE),
        (Step.SHIPMENT, DONE),
        (Step.SHIPPED_EMAIL, DONE),
    ]
    fake = orders.fake
    assert fake.log() == [
        ("create_payment_intent", key(order, Step.PAYMENT_INTENT)),
        ("authorize_payment", key(order, Step.PAYMENT_CONFIRM)),
        ("send_picklist", key(order, Step.PICKLIST)),
        ("capture_payment", key(order, Step.PAYMENT_CAPTURE)),
        ("send_email", key(order, Step.CONFIRMATION_EMAIL)),
        ("release_picklist", key(order, Step.PICKLIST_RELEASE)),
        ("send_email", key(order, Step.SHIPPED_EMAIL)),
    ]  # authorized, reserved, then captured: no automatic-capture confirm
    assert not any(call.adopt for call in fake.calls)
    intent = fake.of("create_payment_intent")[0].request
    assert (intent.amount, intent.currency, intent.payment_method) == (4500, "USD", "pm_card_visa")
    assert intent.capture_method == "manual"
    assert fake.of("authorize_payment")[0].request.intent_id == "pi_1"
    assert fake.of("capture_payment")[0].request.intent_id == "pi_1"
    assert [email.template for email in fake.emails()] == [
        EmailTemplate.ORDER_CONFIRMATION,
        EmailTemplate.ORDER_SHIPPED,
    ]
    assert "transaction ch_1" in fake.emails()[0].body
    assert UPS.tracking_number in fake.emails()[1].body


async def test_declined_authorization_ends_the_order_with_one_email_and_nothing_to_undo(
    orders: Orders,
) -> None:
    orders.fake.script(
        "authorize_payment",
        refuse(
            PAYMENT_DECLINED,
            "payments answered 402 card_declined: Your card has insufficient funds.",
            {"code": "card_declined", "decline_code": "insufficient_funds"},
        ),
    )
    order = await orders.start()
    view = await orders.handle(order).result()

    assert view.status == OrderStatus.PAYMENT_DECLINED
    assert view.failure_reason == "payment declined: insufficient_funds"
    assert (view.transaction_id, view.refund_id, view.picklist_id) == (None, None, None)
    assert steps(view) == [
        (Step.PAYMENT_INTENT, DONE),
        (Step.PAYMENT_CONFIRM, FAILED),
        (Step.DECLINE_EMAIL, DONE),
    ]
    assert orders.fake.log() == [
        ("create_payment_intent", key(order, Step.PAYMENT_INTENT)),
        ("authorize_payment", key(order, Step.PAYMENT_CONFIRM)),  # not retried: non-retryable
        ("send_email", key(order, Step.DECLINE_EMAIL)),
    ]  # the refused authorization held nothing: no cancel_payment, no picklist, no capture
    (email,) = orders.fake.emails()
    assert email.template == EmailTemplate.PAYMENT_DECLINED
    assert "declined (insufficient_funds). Nothing was charged." in email.body


RELEASED = PaymentIntent(id="pi_1", amount=4500, currency="USD", status="canceled", charge="ch_1")
"""The gateway's answer to cancelling an authorized intent: the authorization (its charge
``ch_1``) released, no money taken; ``charge`` is set, yet there is nothing to refund."""


async def test_out_of_stock_releases_the_authorization_and_charges_nothing(
    orders: Orders,
) -> None:
    fake = orders.fake
    fake.script(
        "send_picklist",
        refuse(
            OUT_OF_STOCK,
            "warehouse answered 422 out_of_stock: SKU-TEE",
            {"code": "out_of_stock", "sku": "SKU-TEE"},
        ),
    )
    fake.script("cancel_payment", answer(RELEASED))
    order = await orders.start()
    view = await orders.handle(order).result()

    assert view.status == OrderStatus.OUT_OF_STOCK
    assert view.failure_reason == "out of stock: SKU-TEE"
    assert (view.payment_intent_id, view.transaction_id) == ("pi_1", None)
    assert (view.refund_id, view.picklist_id) == (None, None)
    assert steps(view) == [
        (Step.PAYMENT_INTENT, DONE),
        (Step.PAYMENT_CONFIRM, DONE),
        (Step.PICKLIST, FAILED),
        (Step.PAYMENT_CANCEL, DONE),
        (Step.OUT_OF_STOCK_EMAIL, DONE),
    ]
    assert fake.log() == [
        ("create_payment_intent", key(order, Step.PAYMENT_INTENT)),
        ("authorize_payment", key(order, Step.PAYMENT_CONFIRM)),
        ("send_picklist", key(order, Step.PICKLIST)),
        ("cancel_payment", key(order, Step.PAYMENT_CANCEL)),
        ("send_email", key(order, Step.OUT_OF_STOCK_EMAIL)),
    ]  # stopped before any money moved: no capture, no refund, no cancel of the refused picklist
    assert fake.of("cancel_payment")[0].request.intent_id == "pi_1"
    (email,) = fake.emails()  # the customer never heard "confirmed"
    assert email.template == EmailTemplate.OUT_OF_STOCK
    assert "SKU-TEE is out of stock" in email.body
    assert "Nothing was charged." in email.body
    assert "refunded" not in email.body


async def test_cancel_while_awaiting_shipment_undoes_newest_first_then_emails(
    orders: Orders,
) -> None:
    order = await orders.start()
    await orders.until(order, OrderStatus.AWAITING_SHIPMENT)

    view = await orders.cancel(order, "customer changed their mind")

    assert view.status == OrderStatus.CANCELLED
    assert view.failure_reason == "cancelled: customer changed their mind"
    assert (view.transaction_id, view.refund_id, view.shipment) == ("ch_1", "re_1", None)
    assert steps(view) == [
        (Step.PAYMENT_INTENT, DONE),
        (Step.PAYMENT_CONFIRM, DONE),
        (Step.PICKLIST, DONE),
        (Step.PAYMENT_CAPTURE, DONE),
        (Step.CONFIRMATION_EMAIL, DONE),
        (Step.PICKLIST_RELEASE, DONE),
        (Step.SHIPMENT, FAILED),
        (Step.PICKLIST_CANCEL, DONE),
        (Step.REFUND, DONE),
        (Step.CANCELLATION_EMAIL, DONE),
    ]
    fake = orders.fake
    assert fake.log()[6:] == [
        ("cancel_picklist", key(order, Step.PICKLIST_CANCEL)),
        ("refund_payment", key(order, Step.REFUND)),
        ("send_email", key(order, Step.CANCELLATION_EMAIL)),
    ]
    picklist = fake.of("cancel_picklist")[0].request
    assert (picklist.picklist_id, picklist.picklist) == ("pl_1", None)
    refund = fake.of("refund_payment")[0].request
    assert (refund.charge_id, refund.reason) == ("ch_1", "cancelled: customer changed their mind")
    assert "cancel_payment" not in [call.activity for call in fake.calls]  # captured: known
    email = fake.emails()[-1]
    assert email.template == EmailTemplate.ORDER_CANCELLED
    assert "has been refunded" in email.body
    assert await orders.handle(order).result() == view


@pytest.mark.parametrize(
    "gateway_says",
    [
        RELEASED,
        PaymentIntent(id="pi_1", amount=4500, currency="USD", status="canceled"),
    ],
    ids=["authorization-released", "never-authorized"],
)
async def test_prompt_cancel_during_a_hung_authorize_releases_it_and_refunds_nothing(
    orders: Orders, gateway_says: PaymentIntent
) -> None:
    fake = orders.fake
    fake.script("authorize_payment", hang())  # never answers until cancelled
    fake.script("cancel_payment", answer(gateway_says))
    order = await orders.start()
    await fake.called("authorize_payment")

    before = await orders.env.get_current_time()
    view = await orders.cancel(order, "too slow")
    assert await orders.env.get_current_time() - before < timedelta(seconds=3)

    assert view.status == OrderStatus.CANCELLED
    assert view.failure_reason == "cancelled: too slow"
    assert (view.transaction_id, view.refund_id, view.picklist_id) == (None, None, None)
    assert steps(view) == [
        (Step.PAYMENT_INTENT, DONE),
        (Step.PAYMENT_CONFIRM, FAILED),
        (Step.PICKLIST_CANCEL, DONE),
        (Step.PAYMENT_CANCEL, DONE),
        (Step.CANCELLATION_EMAIL, DONE),
    ]
    assert fake.log() == [
        ("create_payment_intent", key(order, Step.PAYMENT_INTENT)),
        ("authorize_payment", key(order, Step.PAYMENT_CONFIRM)),
        # Once the authorization is under way, a cancel asks the warehouse too: the workflow
        # cannot tell this cancel from a rerun's after a lost task made a picklist locally.
        ("cancel_picklist", key(order, Step.PICKLIST_CANCEL)),
        ("cancel_payment", key(order, Step.PAYMENT_CANCEL)),
        ("send_email", key(order, Step.CANCELLATION_EMAIL)),
    ]  # the gateway decides what the cut-short authorize did; nothing was captured to refund
    assert fake.of("cancel_payment")[0].request.intent_id == "pi_1"
    (email,) = fake.emails()  # no confirmation email
    assert email.template == EmailTemplate.ORDER_CANCELLED
    assert "Nothing was charged." in email.body


@pytest.mark.parametrize(
    ("gateway_says", "charge", "refund_id", "money_line"),
    [
        (
            PaymentIntent(
                id="pi_1", amount=4500, currency="USD", status="succeeded", charge="ch_1"
            ),
            "ch_1",
            "re_1",
            "Your payment of 45.00 USD has been refunded.",
        ),
        (RELEASED, None, None, "Nothing was charged."),
    ],
    ids=["capture-went-through", "capture-never-landed"],
)
async def test_prompt_cancel_during_a_hung_capture_lets_the_gateway_decide(
    orders: Orders,
    gateway_says: PaymentIntent,
    charge: str | None,
    refund_id: str | None,
    money_line: str,
) -> None:
    fake = orders.fake
    fake.script("capture_payment", hang())  # never answers until cancelled
    fake.script("cancel_payment", answer(gateway_says))
    order = await orders.start()
    await fake.called("capture_payment")

    before = await orders.env.get_current_time()
    view = await orders.cancel(order, "too slow")
    assert await orders.env.get_current_time() - before < timedelta(seconds=3)

    assert view.status == OrderStatus.CANCELLED
    assert view.failure_reason == "cancelled: too slow"
    assert (view.transaction_id, view.refund_id) == (charge, refund_id)
    refunded = [(Step.REFUND, DONE)] if charge else []
    assert steps(view) == [
        (Step.PAYMENT_INTENT, DONE),
        (Step.PAYMENT_CONFIRM, DONE),
        (Step.PICKLIST, DONE),
        (Step.PAYMENT_CAPTURE, FAILED),
        (Step.PICKLIST_CANCEL, DONE),
        (Step.PAYMENT_CANCEL, DONE),
        *refunded,
        (Step.CANCELLATION_EMAIL, DONE),
    ]
    refund = [("refund_payment", key(order, Step.REFUND))] if charge else []
    assert sent_once_each(fake.log()) == [
        ("create_payment_intent", key(order, Step.PAYMENT_INTENT)),
        ("authorize_payment", key(order, Step.PAYMENT_CONFIRM)),
        ("send_picklist", key(order, Step.PICKLIST)),
        ("capture_payment", key(order, Step.PAYMENT_CAPTURE)),
        ("cancel_picklist", key(order, Step.PICKLIST_CANCEL)),
        ("cancel_payment", key(order, Step.PAYMENT_CANCEL)),
        *refund,  # one refund, of the charge the gateway says it captured
        ("send_email", key(order, Step.CANCELLATION_EMAIL)),
    ]
    assert fake.of("cancel_payment")[0].request.intent_id == "pi_1"
    if charge:
        (refunded_call,) = fake.of("refund_payment")
        assert refunded_call.request.charge_id == charge
        assert refunded_call.request.reason == "cancelled: too slow"
    (email,) = fake.emails()  # no confirmation email: the capture never answered
    assert email.template == EmailTemplate.ORDER_CANCELLED
    assert money_line in email.body


async def test_prompt_cancel_while_the_intent_keeps_failing_charges_nothing(
    orders: Orders,
) -> None:
    fake = orders.fake
    fake.script("create_payment_intent", unavailable())
    order = await orders.start()
    await fake.called("create_payment_intent")

    before = await orders.env.get_current_time()
    view = await orders.cancel(order, "gave up")
    assert await orders.env.get_current_time() - before < timedelta(seconds=3)

    assert view.status == OrderStatus.CANCELLED
    assert (view.payment_intent_id, view.transaction_id, view.refund_id) == (None, None, None)
    assert steps(view) == [(Step.PAYMENT_INTENT, FAILED), (Step.CANCELLATION_EMAIL, DONE)]
    intents = fake.of("create_payment_intent")
    assert {call.key for call in intents} == {key(order, Step.PAYMENT_INTENT)}
    assert fake.log() == [
        *[("create_payment_intent", key(order, Step.PAYMENT_INTENT))] * len(intents),
        ("send_email", key(order, Step.CANCELLATION_EMAIL)),
    ]  # no intent id was ever known: no cancel_payment, no refund
    (email,) = fake.emails()
    assert email.template == EmailTemplate.ORDER_CANCELLED
    assert "Nothing was charged." in email.body


STORY = (
    Step.PAYMENT_INTENT,
    Step.PAYMENT_CONFIRM,
    Step.PICKLIST,
    Step.PAYMENT_CAPTURE,
    Step.CONFIRMATION_EMAIL,
    Step.PICKLIST_RELEASE,
)
"""The steps up to awaiting shipment, in order."""
ACTIVITY_OF = {
    Step.PAYMENT_INTENT: "create_payment_intent",
    Step.PAYMENT_CONFIRM: "authorize_payment",
    Step.PICKLIST: "send_picklist",
    Step.PAYMENT_CAPTURE: "capture_payment",
    Step.CONFIRMATION_EMAIL: "send_email",
    Step.PICKLIST_RELEASE: "release_picklist",
}


@pytest.mark.parametrize(
    ("step", "service", "options", "label", "action"),
    [
        (
            Step.PAYMENT_CONFIRM,
            "payments",
            OrderOptions(payment_retry_budget=timedelta(minutes=1)),
            "payment",
            OperatorAction.RETRY,
        ),
        (
            Step.PICKLIST,
            "warehouse",
            OrderOptions(step_retry_budget=timedelta(minutes=1)),
            "picklist",
            OperatorAction.RETRY,
        ),
        (
            # The step budget (6 hours) would not have run out in the 2 minutes skipped.
            Step.PAYMENT_CAPTURE,
            "payments",
            OrderOptions(payment_retry_budget=timedelta(minutes=1)),
            "payment",
            OperatorAction.RETRY_PAYMENT,
        ),
    ],
    ids=["payment-budget", "step-budget", "capture-payment-budget"],
)
async def test_a_step_failing_past_its_budget_needs_an_operator_who_retries_it(
    orders: Orders,
    step: Step,
    service: str,
    options: OrderOptions,
    label: str,
    action: OperatorAction,
) -> None:
    fake, activity_name = orders.fake, ACTIVITY_OF[step]
    fake.script(activity_name, unavailable(service))
    order = await orders.start(options)
    # Tried twice (a local-first step: its local try, then the regular activity) before time
    # is skipped, so the skip never lands inside the workflow task that holds a local try.
    await fake.called(activity_name, times=2)
    await orders.env.sleep(timedelta(minutes=2))  # skipped, not waited

    parked = await orders.until(order, OrderStatus.NEEDS_ATTENTION)
    assert parked.attention_step == step
    assert parked.attention_reason is not None
    assert parked.attention_reason.startswith(f"{label} failing for over 1 minute: ")
    assert f"{service} answered 503" in parked.attention_reason  # the last error, for operators
    assert parked.transaction_id is None  # nothing captured yet, whichever step is parked
    tried = fake.of(activity_name)
    assert len(tried) > 1  # retried within the budget, always under the same key
    assert {(call.key, call.adopt) for call in tried} == {(key(order, step), False)}

    fake.script(activity_name)  # the provider is back
    before = len(fake.calls)
    resolved = await orders.resolve(order, action)
    assert resolved.status != OrderStatus.NEEDS_ATTENTION
    assert (resolved.attention_step, resolved.attention_reason) == (None, None)
    waiting = await orders.until(order, OrderStatus.AWAITING_SHIPMENT)

    retry = fake.calls[before]  # the same key: a request of the first try may still be in flight
    assert (retry.activity, retry.key, retry.adopt) == (activity_name, key(order, step), True)
    later = STORY[STORY.index(step) + 1 :]
    assert fake.log()[before + 1 :] == [(ACTIVITY_OF[s], key(order, s)) for s in later]
    assert len(fake.of("create_payment_intent")) == 1  # the intent is not made again
    assert fake.of("authorize_payment")[-1].request.intent_id == "pi_1"
    assert fake.of("capture_payment")[-1].request.intent_id == "pi_1"
    assert [call.activity for call in fake.calls].count("capture_payment") == len(
        tried if step == Step.PAYMENT_CAPTURE else []
    ) + 1
    assert (waiting.transaction_id, waiting.picklist_id) == ("ch_1", "pl_1")
    expected: list[tuple[Step, StepState]] = []
    for done in STORY:
        if done == step:
            expected += [(step, FAILED), (Step.OPERATOR, DONE)]
        expected.append((done, DONE))
    assert steps(waiting) == [*expected, (Step.SHIPMENT, StepState.STARTED)]


async def test_a_refused_capture_needs_an_operator_whose_cancel_releases_it(
    orders: Orders,
) -> None:
    fake = orders.fake
    message = "payments answered 400 payment_intent_unexpected_state: authorization expired"
    fake.script("capture_payment", refuse(PROVIDER_REJECTED, message))
    fake.script("cancel_payment", answer(RELEASED))
    order = await orders.start()

    parked = await orders.until(order, OrderStatus.NEEDS_ATTENTION)
    assert parked.attention_step == Step.PAYMENT_CAPTURE
    assert parked.attention_reason is not None
    assert parked.attention_reason.startswith("payment refused: ")
    assert message in parked.attention_reason
    assert (parked.transaction_id, parked.picklist_id) == (None, "pl_1")
    assert len(fake.of("capture_payment")) == 1  # a refusal is not retried on its own

    view = await orders.resolve(order, OperatorAction.CANCEL, "card expired")

    assert view.status == OrderStatus.CANCELLED
    assert (view.transaction_id, view.refund_id, view.attention_step) == (None, None, None)
    assert steps(view)[2:] == [
        (Step.PICKLIST, DONE),
        (Step.PAYMENT_CAPTURE, FAILED),
        (Step.OPERATOR, FAILED),
        (Step.PICKLIST_CANCEL, DONE),
        (Step.PAYMENT_CANCEL, DONE),
        (Step.CANCELLATION_EMAIL, DONE),
    ]
    assert fake.log()[2:] == [
        ("send_picklist", key(order, Step.PICKLIST)),
        ("capture_payment", key(order, Step.PAYMENT_CAPTURE)),
        ("cancel_picklist", key(order, Step.PICKLIST_CANCEL)),
        ("cancel_payment", key(order, Step.PAYMENT_CANCEL)),
        ("send_email", key(order, Step.CANCELLATION_EMAIL)),
    ]  # never captured: the gateway releases what is left, nothing is refunded
    (email,) = fake.emails()  # never confirmed
    assert email.template == EmailTemplate.ORDER_CANCELLED
    assert "Nothing was charged." in email.body


async def test_a_refusal_needs_an_operator_whose_retry_uses_a_new_key(orders: Orders) -> None:
    fake = orders.fake
    message = "warehouse answered 422 invalid_request: ship_to is not deliverable"
    fake.script("send_picklist", refuse(PROVIDER_REJECTED, message), answer(Picklist(id="pl_2")))
    order = await orders.start()

    parked = await orders.until(order, OrderStatus.NEEDS_ATTENTION)
    assert parked.attention_step == Step.PICKLIST
    assert parked.attention_reason is not None
    assert parked.attention_reason.startswith("picklist refused: ")
    assert message in parked.attention_reason
    assert fake.log()[-1] == ("send_picklist", key(order, Step.PICKLIST))
    assert len(fake.of("send_picklist")) == 1  # a refusal is not retried on its own

    await orders.resolve(order, OperatorAction.RETRY)
    waiting = await orders.until(order, OrderStatus.AWAITING_SHIPMENT)

    retry = fake.of("send_picklist")[1]
    assert (retry.key, retry.adopt) == (key(order, Step.PICKLIST, 2), True)
    assert waiting.picklist_id == "pl_2"
    assert (waiting.attention_step, waiting.attention_reason) == (None, None)
    assert steps(waiting)[2:] == [
        (Step.PICKLIST, FAILED),
        (Step.OPERATOR, DONE),
        (Step.PICKLIST, DONE),
        (Step.PAYMENT_CAPTURE, DONE),
        (Step.CONFIRMATION_EMAIL, DONE),
        (Step.PICKLIST_RELEASE, DONE),
        (Step.SHIPMENT, StepState.STARTED),
    ]
    assert len(fake.of("capture_payment")) == 1  # captured once, after the stock was reserved
    await orders.ship(order)
    assert (await orders.handle(order).result()).status == OrderStatus.COMPLETED


async def test_a_shipped_report_before_the_order_awaits_shipment_is_ignored(
    orders: Orders,
) -> None:
    fake = orders.fake
    release = asyncio.Event()
    fake.script("create_payment_intent", hang(release))
    order = await orders.start()
    await fake.called("create_payment_intent")

    await orders.ship(order, EARLY)
    await _handled_last_signal(orders.handle(order))  # while the intent still hangs
    assert (await order_status(orders.client, order.id)).status == OrderStatus.RECEIVED
    release.set()

    waiting = await orders.until(order, OrderStatus.AWAITING_SHIPMENT)
    assert waiting.shipment is None
    # The hung intent's local try timed out and the activity asked again under the same key.
    assert list(dict.fromkeys(fake.log())) == [
        ("create_payment_intent", key(order, Step.PAYMENT_INTENT)),
        ("authorize_payment", key(order, Step.PAYMENT_CONFIRM)),
        ("send_picklist", key(order, Step.PICKLIST)),
        ("capture_payment", key(order, Step.PAYMENT_CAPTURE)),
        ("send_email", key(order, Step.CONFIRMATION_EMAIL)),
        ("release_picklist", key(order, Step.PICKLIST_RELEASE)),
    ]  # no shipped email: the early report was not kept

    await orders.ship(order, UPS)
    view = await orders.handle(order).result()
    assert view.status == OrderStatus.COMPLETED
    assert view.shipment == UPS
    assert [email.template for email in fake.emails()] == [
        EmailTemplate.ORDER_CONFIRMATION,
        EmailTemplate.ORDER_SHIPPED,
    ]
    assert EARLY.tracking_number not in fake.emails()[-1].body


async def _handled_last_signal(handle: WorkflowHandle[Any, Any], within: float = 10.0) -> None:
    """Wait until a workflow task has completed after the latest signal in the history.

    A signal sent while a workflow task runs (a step's local try) enters the history when that
    task completes; until then there is none to find.
    """
    async with asyncio.timeout(within):
        while True:
            events = [event.event_type async for event in handle.fetch_history_events()]
            signals = [
                i
                for i, kind in enumerate(events)
                if kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
            ]
            if signals and EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED in events[signals[-1] :]:
                return
            await asyncio.sleep(0.02)


async def test_prompt_cancel_during_a_hung_picklist_lets_the_warehouse_take_it_back(
    orders: Orders,
) -> None:
    fake = orders.fake
    fake.script("send_picklist", hang())
    fake.script("cancel_payment", answer(RELEASED))
    order = await orders.start()
    await fake.called("send_picklist")
    reserving = await order_status(orders.client, order.id)
    assert (reserving.status, reserving.transaction_id) == (OrderStatus.AUTHORIZED, None)

    before = await orders.env.get_current_time()
    view = await orders.cancel(order, "too slow")
    assert await orders.env.get_current_time() - before < timedelta(seconds=3)

    assert view.status == OrderStatus.CANCELLED
    assert (view.transaction_id, view.refund_id, view.picklist_id) == (None, None, None)
    assert steps(view)[2:] == [
        (Step.PICKLIST, FAILED),
        (Step.PICKLIST_CANCEL, DONE),
        (Step.PAYMENT_CANCEL, DONE),
        (Step.CANCELLATION_EMAIL, DONE),
    ]
    assert sent_once_each(fake.log())[2:] == [
        ("send_picklist", key(order, Step.PICKLIST)),
        ("cancel_picklist", key(order, Step.PICKLIST_CANCEL)),
        ("cancel_payment", key(order, Step.PAYMENT_CANCEL)),
        ("send_email", key(order, Step.CANCELLATION_EMAIL)),
    ]  # cancelled before the capture: the authorization is released, nothing to refund
    # The picklist's id never reached the order: the cancel still runs, and the warehouse
    # cancels the order as a whole (whatever the cut-short request made, or will make when it
    # arrives). It no longer carries a picklist request to find one with.
    cancel = fake.of("cancel_picklist")[0].request
    assert (cancel.order_id, cancel.picklist_id, cancel.picklist) == (order.id, None, None)
    (email,) = fake.emails()
    assert email.template == EmailTemplate.ORDER_CANCELLED
    assert "Nothing was charged." in email.body


async def _parked_on_a_refused_picklist(orders: Orders) -> Order:
    """An order whose picklist the warehouse refused (not an outcome): it waits, authorized."""
    orders.fake.script(
        "send_picklist", refuse(PROVIDER_REJECTED, "warehouse answered 422 invalid_request")
    )
    order = await orders.start()
    await orders.until(order, OrderStatus.NEEDS_ATTENTION)
    return order


async def test_operator_cancel_of_a_parked_order_undoes_what_it_did(orders: Orders) -> None:
    order = await _parked_on_a_refused_picklist(orders)

    view = await orders.resolve(order, OperatorAction.CANCEL, "address undeliverable")

    assert view.status == OrderStatus.CANCELLED
    assert view.failure_reason == "cancelled: address undeliverable"
    assert (view.transaction_id, view.refund_id) == (None, None)
    assert steps(view)[2:] == [
        (Step.PICKLIST, FAILED),
        (Step.OPERATOR, FAILED),
        (Step.PICKLIST_CANCEL, DONE),
        (Step.PAYMENT_CANCEL, DONE),
        (Step.CANCELLATION_EMAIL, DONE),
    ]
    assert orders.fake.log()[2:] == [
        ("send_picklist", key(order, Step.PICKLIST)),
        ("cancel_picklist", key(order, Step.PICKLIST_CANCEL)),
        ("cancel_payment", key(order, Step.PAYMENT_CANCEL)),
        ("send_email", key(order, Step.CANCELLATION_EMAIL)),
    ]  # parked before the capture: the authorization is released, nothing refunded
    (email,) = orders.fake.emails()
    assert "Nothing was charged." in email.body


async def test_a_cancelled_order_no_longer_asks_for_attention(orders: Orders) -> None:
    order = await _parked_on_a_refused_picklist(orders)

    view = await orders.resolve(order, OperatorAction.CANCEL, "address undeliverable")

    assert view.status == OrderStatus.CANCELLED
    assert (view.attention_step, view.attention_reason) == (None, None)


# ---------------------------------------------------------------------------------------------
# Update validators
# ---------------------------------------------------------------------------------------------


async def test_cancel_of_a_completed_order_is_refused_with_the_rules_message(
    orders: Orders,
) -> None:
    order = await orders.start()
    await orders.until(order, OrderStatus.AWAITING_SHIPMENT)
    await orders.ship(order)
    done = await orders.handle(order).result()
    calls = len(orders.fake.calls)

    refusal = rules.cancel_refusal(done)
    assert refusal == f"order {order.id} is already completed; it can't be cancelled"
    with pytest.raises(OrderRefused) as refused:
        await cancel_order(orders.client, order.id, "too late")
    assert str(refused.value) == refusal
    assert len(orders.fake.calls) == calls


async def test_a_second_cancel_while_cancelling_is_refused_by_the_validator(
    orders: Orders,
) -> None:
    fake = orders.fake
    release = asyncio.Event()
    fake.script("cancel_picklist", hang(release))
    order = await orders.start()
    await orders.until(order, OrderStatus.AWAITING_SHIPMENT)
    first = asyncio.create_task(orders.cancel(order, "first"))
    await fake.called("cancel_picklist")

    cancelling = await order_status(orders.client, order.id)
    assert cancelling.status == OrderStatus.CANCELLING
    refusal = await orders.refusal(orders.cancel(order, "second"))
    assert refusal == rules.cancel_refusal(cancelling)
    assert refusal == f"order {order.id} is already being cancelled"

    release.set()
    view = await first
    assert view.status == OrderStatus.CANCELLED
    assert view.failure_reason == "cancelled: first"
    assert [call for call, _ in fake.log()[6:]] == [
        "cancel_picklist",
        "refund_payment",
        "send_email",
    ]


async def test_resolve_is_refused_when_the_order_needs_no_attention(orders: Orders) -> None:
    order = await orders.start()
    await orders.until(order, OrderStatus.AWAITING_SHIPMENT)
    calls = len(orders.fake.calls)

    refusal = await orders.refusal(orders.resolve(order, OperatorAction.RETRY))

    assert refusal == (
        f"order {order.id} is awaiting-shipment, not needs-attention; there is nothing to resolve"
    )
    assert (await order_status(orders.client, order.id)).status == OrderStatus.AWAITING_SHIPMENT
    assert len(orders.fake.calls) == calls


async def test_retry_payment_is_refused_for_a_step_that_is_not_a_payment(
    orders: Orders,
) -> None:
    order = await _parked_on_a_refused_picklist(orders)
    calls = len(orders.fake.calls)

    refusal = await orders.refusal(orders.resolve(order, OperatorAction.RETRY_PAYMENT))

    assert refusal == (
        f"order {order.id}: not its payment but its picklist step failed: use --action retry"
    )
    view = await order_status(orders.client, order.id)
    assert (view.status, view.attention_step) == (OrderStatus.NEEDS_ATTENTION, Step.PICKLIST)
    assert len(orders.fake.calls) == calls


# ---------------------------------------------------------------------------------------------
# Goods never leave unpaid
# ---------------------------------------------------------------------------------------------


async def test_a_parcel_that_left_before_the_capture_is_paid_for_before_shipped_is_said(
    orders: Orders,
) -> None:
    fake = orders.fake
    fake.script(
        "capture_payment",
        refuse(PROVIDER_REJECTED, "payments answered 402 card_declined: do not honor"),
        answer(_DEFAULT),
    )
    order = await orders.start()
    parked = await orders.until(order, OrderStatus.NEEDS_ATTENTION)
    assert parked.attention_step == Step.PAYMENT_CAPTURE
    assert parked.picklist_held and parked.picklist_id == "pl_1"
    assert "release_picklist" not in [call.activity for call in fake.calls]

    await orders.ship(order, EARLY)  # the warehouse shipped the held picklist anyway
    await _handled_last_signal(orders.handle(order))
    taken = await order_status(orders.client, order.id)
    assert taken.shipment == EARLY and taken.status == OrderStatus.NEEDS_ATTENTION
    assert taken.attention_reason is not None
    assert taken.attention_reason.startswith(
        "the parcel left before the payment was captured: payment refused: "
    )
    refusal = await orders.refusal(orders.cancel(order))
    assert refusal == f"order {order.id} has shipped; it can't be cancelled"

    view = await orders.resolve(order, OperatorAction.RETRY_PAYMENT)
    view = await orders.handle(order).result()
    assert view.status == OrderStatus.COMPLETED
    assert (view.transaction_id, view.shipment, view.refund_id) == ("ch_1", EARLY, None)
    assert [email.template for email in fake.emails()] == [
        EmailTemplate.ORDER_CONFIRMATION,
        EmailTemplate.ORDER_SHIPPED,
    ]  # confirmed before "shipped", and nothing about a cancel
    assert fake.log()[3:] == [
        ("capture_payment", key(order, Step.PAYMENT_CAPTURE)),
        ("capture_payment", key(order, Step.PAYMENT_CAPTURE, attempt=2)),
        ("send_email", key(order, Step.CONFIRMATION_EMAIL)),
        ("release_picklist", key(order, Step.PICKLIST_RELEASE)),
        ("send_email", key(order, Step.SHIPPED_EMAIL)),
    ]


async def test_a_cancel_that_meets_a_parcel_gone_unpaid_captures_confirms_then_ships(
    orders: Orders,
) -> None:
    fake = orders.fake
    # Held at the gateway: the local try, then its regular retry under the same key.
    fake.script("capture_payment", hang(), hang(), answer(_DEFAULT))
    fake.script("cancel_picklist", answer(Picklist(id="pl_1", shipment=EARLY)))
    order = await orders.start()
    await fake.called("capture_payment", times=2)

    view = await orders.cancel(order)  # accepted; the warehouse answers the parcel left

    assert view.status == OrderStatus.COMPLETED
    assert (view.transaction_id, view.shipment, view.refund_id) == ("ch_1", EARLY, None)
    assert (view.failure_reason, view.winding_down_to) == (None, None)
    assert [email.template for email in fake.emails()] == [
        EmailTemplate.ORDER_CONFIRMATION,
        EmailTemplate.ORDER_SHIPPED,
    ]
    assert sent_once_each(fake.log())[3:] == [
        ("capture_payment", key(order, Step.PAYMENT_CAPTURE)),
        ("cancel_picklist", key(order, Step.PICKLIST_CANCEL)),
        # The same key: the held capture, whatever became of it, is the one answered.
        ("capture_payment", key(order, Step.PAYMENT_CAPTURE)),
        ("send_email", key(order, Step.CONFIRMATION_EMAIL)),
        ("send_email", key(order, Step.SHIPPED_EMAIL)),
    ]  # no payment cancel, no refund: the goods are gone and paid for


# ---------------------------------------------------------------------------------------------
# Authorizations expire; refunds can be pending, then fail
# ---------------------------------------------------------------------------------------------

HELD_FOR = timedelta(minutes=10)
"""The authorization's life in these tests (Stripe's is about 7 days; the server skips it)."""


def authorized_until(orders: Orders, life: timedelta = HELD_FOR) -> Behaviour:
    """The gateway authorizes, capturable for ``life`` from now (its ``capture_before``)."""

    async def behave(request: ConfirmPaymentRequest) -> PaymentIntent:
        now = await orders.env.get_current_time()
        return PaymentIntent(
            id=request.intent_id,
            amount=1,
            currency="USD",
            status="requires_capture",
            charge="ch_1",
            capture_before=int((now + life).timestamp()),
        )

    return behave


async def test_an_authorization_that_expires_while_the_picklist_waits_winds_the_order_down(
    orders: Orders,
) -> None:
    fake = orders.fake
    fake.script("authorize_payment", authorized_until(orders))
    fake.script("send_picklist", refuse(PROVIDER_REJECTED, "warehouse answered 422 on_hold"))
    fake.script("cancel_payment", answer(RELEASED))
    order = await orders.start()
    parked = await orders.until(order, OrderStatus.NEEDS_ATTENTION)
    assert parked.attention_step == Step.PICKLIST and parked.authorization_expires_at
    assert "expires at" not in (parked.attention_reason or "")  # not yet within the warning

    await orders.env.sleep(timedelta(minutes=6))  # past half its life: operators are warned
    warned = await order_status(orders.client, order.id)
    assert warned.status == OrderStatus.NEEDS_ATTENTION
    expiry = f"{parked.authorization_expires_at:%Y-%m-%d %H:%M:%S} UTC"
    assert warned.attention_reason is not None
    assert warned.attention_reason.endswith(f"the card authorization expires at {expiry}")

    await orders.env.sleep(timedelta(minutes=5))  # past the expiry
    view = await orders.until(order, OrderStatus.CANCELLED)
    assert view.failure_reason == (
        "cancelled: the card authorization expired before the payment was captured"
    )
    assert (view.transaction_id, view.refund_id, view.authorization_expires_at) == (
        None,
        None,
        None,
    )
    assert fake.log()[-3:] == [
        ("cancel_picklist", key(order, Step.PICKLIST_CANCEL)),  # the stock goes back
        ("cancel_payment", key(order, Step.PAYMENT_CANCEL)),
        ("send_email", key(order, Step.CANCELLATION_EMAIL)),
    ]
    (email,) = fake.emails()
    assert "Nothing was charged." in email.body and "authorization expired" in email.body
    assert "capture_payment" not in [call.activity for call in fake.calls]


async def test_an_expired_authorization_is_renewed_when_the_order_says_so(orders: Orders) -> None:
    fake = orders.fake
    fake.script("authorize_payment", authorized_until(orders))
    fake.script(
        "capture_payment",
        refuse(PROVIDER_REJECTED, "payments answered 402 card_declined: try later"),
        answer(_DEFAULT),
    )
    order = await orders.start(OrderOptions(reauthorize_expired=True))
    await orders.until(order, OrderStatus.NEEDS_ATTENTION)

    await orders.env.sleep(HELD_FOR + timedelta(minutes=1))  # expired: authorized again
    await orders.until(order, OrderStatus.AWAITING_SHIPMENT)
    await orders.ship(order)
    view = await orders.handle(order).result()

    assert view.status == OrderStatus.COMPLETED and view.transaction_id == "ch_1"
    assert fake.log()[3:8] == [
        ("capture_payment", key(order, Step.PAYMENT_CAPTURE)),  # refused, parked
        # The gateway decides: the expired intent is cancelled (were it captured, kept).
        ("cancel_payment", key(order, Step.PAYMENT_CANCEL)),
        ("create_payment_intent", key(order, Step.PAYMENT_INTENT, attempt=2)),
        ("authorize_payment", key(order, Step.PAYMENT_CONFIRM, attempt=2)),
        # Taken at once on the new authorization, as an operator's retry would.
        ("capture_payment", key(order, Step.PAYMENT_CAPTURE, attempt=2)),
    ]
    assert [email.template for email in fake.emails()] == [
        EmailTemplate.ORDER_CONFIRMATION,
        EmailTemplate.ORDER_SHIPPED,
    ]


async def test_a_refund_that_fails_is_told_as_it_is_and_an_operator_refunds_again(
    orders: Orders,
) -> None:
    fake = orders.fake
    pending = Refund(id="re_1", amount=1, status="pending")
    fake.script("refund_payment", answer(pending), answer(Refund(id="re_2", amount=1)))
    still_pending = refuse("RefundPending", "refund re_1 is still pending", non_retryable=False)
    failed = Refund(id="re_1", amount=1, status="failed", failure_reason="lost_or_stolen_card")
    fake.script("follow_refund", still_pending, still_pending, answer(failed))
    order = await orders.start()
    await orders.until(order, OrderStatus.AWAITING_SHIPMENT)
    cancel = asyncio.create_task(orders.cancel(order))

    parked = await orders.until(order, OrderStatus.NEEDS_ATTENTION)
    assert parked.attention_step == Step.REFUND
    assert parked.attention_reason == "refund re_1 failed: lost_or_stolen_card"
    assert (parked.refund_id, parked.refund_status) == ("re_1", "failed")
    assert len(fake.of("follow_refund")) == 3  # asked until it settled
    cancelled, failure = fake.emails()[-2:]
    assert cancelled.template == EmailTemplate.ORDER_CANCELLED
    assert "has been issued" in cancelled.body and "refunded" not in cancelled.body
    assert failure.template == EmailTemplate.REFUND_FAILED
    assert "lost_or_stolen_card" in failure.body

    await orders.resolve(order, OperatorAction.RETRY)
    view = await cancel
    assert view.status == OrderStatus.CANCELLED
    assert (view.refund_id, view.refund_status) == ("re_2", "succeeded")
    assert [call.key for call in fake.of("refund_payment")] == [
        key(order, Step.REFUND),
        key(order, Step.REFUND, attempt=2),  # a new refund: the failed one gave nothing back
    ]
    assert [email.template for email in fake.emails()].count(EmailTemplate.REFUND_FAILED) == 1


# ---------------------------------------------------------------------------------------------
# 3-D Secure: the customer in the loop
# ---------------------------------------------------------------------------------------------

LINK = "http://gateway.test/payments/authenticate/pi_1?client_secret=pi_1_secret_x"
NEEDS_ACTION = PaymentIntent(
    id="pi_1", amount=1, currency="USD", status="requires_action", authentication_url=LINK
)
NOT_YET = refuse("AuthenticationPending", "pi_1 is still requires_action", non_retryable=False)


async def test_an_order_whose_card_needs_3d_secure_waits_for_the_customer_before_anything(
    orders: Orders,
) -> None:
    fake = orders.fake
    release = asyncio.Event()
    fake.script("authorize_payment", answer(NEEDS_ACTION))
    fake.script("follow_authentication", hang(release))
    order = await orders.start()
    waiting = await orders.until(order, OrderStatus.AWAITING_AUTHENTICATION)
    await fake.called("follow_authentication")
    (email,) = fake.emails()
    assert email.template == EmailTemplate.AUTHENTICATION_REQUIRED and LINK in email.body
    assert waiting.transaction_id is None and waiting.picklist_id is None

    release.set()  # the customer completed 3-D Secure: the gateway shows the authorization
    await orders.until(order, OrderStatus.AWAITING_SHIPMENT)
    assert [activity for activity, _ in fake.log()] == [
        "create_payment_intent",
        "authorize_payment",
        "send_email",
        "follow_authentication",
        "send_picklist",  # stock reserved only once the card is authorized
        "capture_payment",
        "send_email",
        "release_picklist",
    ]
    assert fake.of("follow_authentication")[0].key == key(order, Step.AUTHENTICATION)


async def test_a_customer_who_never_authenticates_is_reminded_once_then_nothing_is_charged(
    orders: Orders,
) -> None:
    fake = orders.fake
    fake.script("authorize_payment", answer(NEEDS_ACTION))
    fake.script("follow_authentication", NOT_YET)
    order = await orders.start(OrderOptions(authentication_wait=timedelta(minutes=2)))
    await fake.called("follow_authentication")
    await orders.env.sleep(timedelta(minutes=1, seconds=5))  # skipped: the reminder is due
    await fake.called("send_email", 2)
    await orders.env.sleep(timedelta(minutes=1, seconds=5))  # skipped: past the deadline
    view = await orders.until(order, OrderStatus.CANCELLED, within=30)

    assert view.status == OrderStatus.CANCELLED
    assert view.failure_reason == "cancelled: the payment was not confirmed with the bank in time"
    assert [email.template for email in fake.emails()] == [
        EmailTemplate.AUTHENTICATION_REQUIRED,
        EmailTemplate.AUTHENTICATION_REMINDER,
        EmailTemplate.ORDER_CANCELLED,
    ]
    assert "Nothing was charged." in fake.emails()[-1].body
    assert fake.log()[-2:] == [
        ("cancel_payment", key(order, Step.PAYMENT_CANCEL)),  # the intent can never be charged
        ("send_email", key(order, Step.CANCELLATION_EMAIL)),
    ]
    done = {activity for activity, _ in fake.log()}
    assert not done & {"send_picklist", "capture_payment", "refund_payment"}


async def test_a_failed_authentication_is_a_decline(orders: Orders) -> None:
    fake = orders.fake
    fake.script("authorize_payment", answer(NEEDS_ACTION))
    failure = {"decline_code": "payment_intent_authentication_failure"}
    fake.script("follow_authentication", NOT_YET, refuse(PAYMENT_DECLINED, "failed", failure))
    order = await orders.start()
    view = await orders.handle(order).result()

    assert view.status == OrderStatus.PAYMENT_DECLINED
    assert view.failure_reason == "payment declined: payment_intent_authentication_failure"
    assert [email.template for email in fake.emails()] == [
        EmailTemplate.AUTHENTICATION_REQUIRED,
        EmailTemplate.PAYMENT_DECLINED,
    ]
    done = {activity for activity, _ in fake.log()}
    assert not done & {"send_picklist", "capture_payment", "refund_payment"}


async def test_a_cancel_while_the_customer_authenticates_cancels_the_intent(
    orders: Orders,
) -> None:
    fake = orders.fake
    fake.script("authorize_payment", answer(NEEDS_ACTION))
    fake.script("follow_authentication", hang())
    order = await orders.start()
    await fake.called("follow_authentication")
    view = await orders.cancel(order)

    assert view.status == OrderStatus.CANCELLED
    assert fake.log()[-2:] == [
        ("cancel_payment", key(order, Step.PAYMENT_CANCEL)),
        ("send_email", key(order, Step.CANCELLATION_EMAIL)),
    ]
    assert "Nothing was charged." in fake.emails()[-1].body


async def test_a_gateway_event_makes_the_wait_read_the_intent_again_at_once(
    orders: Orders,
) -> None:
    fake = orders.fake
    fake.script("authorize_payment", answer(NEEDS_ACTION))
    fake.script("follow_authentication", hang(), answer(_DEFAULT))  # the first read never ends
    order = await orders.start()
    await fake.called("follow_authentication")
    event = GatewayEvent(
        id="evt_1", type="payment_intent.amount_capturable_updated", object_id="pi_1"
    )
    taken = await orders.handle(order).execute_update(
        OrderWorkflow.gateway_event, event, id="stripe:evt_1"
    )
    assert taken == f"order {order.id} took payment_intent.amount_capturable_updated evt_1"

    view = await orders.until(order, OrderStatus.AWAITING_SHIPMENT)
    assert len(fake.of("follow_authentication")) == 2  # read again at once, not after backoff
    assert view.transaction_id == "ch_1"


async def test_a_refund_event_makes_the_order_read_its_pending_refund_at_once(
    orders: Orders,
) -> None:
    fake = orders.fake
    fake.script("refund_payment", answer(Refund(id="re_1", amount=1, status="pending")))
    fake.script("follow_refund", hang(), answer(_DEFAULT))  # the first read never ends
    order = await orders.start()
    await orders.until(order, OrderStatus.AWAITING_SHIPMENT)
    cancel = asyncio.create_task(orders.cancel(order))
    await fake.called("follow_refund")
    event = GatewayEvent(id="evt_2", type="charge.refund.updated", object_id="re_1")
    await orders.handle(order).execute_update(OrderWorkflow.gateway_event, event, id="stripe:evt_2")

    view = await cancel
    assert (view.status, view.refund_status) == (OrderStatus.CANCELLED, "succeeded")
    assert len(fake.of("follow_refund")) == 2  # read again at once, not after its backoff
    assert view.attention_reason is None


async def test_stripe_cancelling_a_held_authorization_winds_the_order_down_at_once(
    orders: Orders,
) -> None:
    fake = orders.fake
    fake.script("authorize_payment", authorized_until(orders, timedelta(days=7)))
    fake.script("send_picklist", refuse(PROVIDER_REJECTED, "warehouse answered 422 on_hold"))
    fake.script("cancel_payment", answer(RELEASED))
    order = await orders.start()
    await orders.until(order, OrderStatus.NEEDS_ATTENTION)
    event = GatewayEvent(id="evt_3", type="payment_intent.canceled", object_id="pi_1")
    await orders.handle(order).execute_update(OrderWorkflow.gateway_event, event, id="stripe:evt_3")

    view = await orders.until(order, OrderStatus.CANCELLED)  # days before its expiry
    assert view.failure_reason == f"cancelled: {AUTHORIZATION_CANCELED}"
    assert "Nothing was charged." in fake.emails()[-1].body
    assert "capture_payment" not in [call.activity for call in fake.calls]
