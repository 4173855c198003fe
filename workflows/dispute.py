"""One chargeback, from Stripe's ``charge.dispute.created`` until the bank decides.

Its own workflow (id ``dispute-<dispute id>``, started by the receiver of Stripe's events, so a
redelivered event starts nothing twice), because the order it is about may have ended long
ago (a completed order's workflow is closed and can take nothing more). It finds the order
through the dispute's payment intent, tells a running order (which shows it in its status),
counts it (``orders_disputes_total``, alert ``OrderDisputed``), emails the operators once, and
stays listed as ``disputed`` (``starter.py list --status disputed``; the ``OrderId`` search
attribute finds it for ``starter.py status``) until ``charge.dispute.closed`` says won or lost.
"""

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import FailureError

with workflow.unsafe.imports_passed_through():
    from activities.mail import EmailRequest, MailActivities
    from activities.payment import DisputeActivities
    from orders.domain import emails, search_attributes
    from orders.domain.models import Dispute
    from orders.domain.status import OrderStatus, Step, idempotency_key
    from workflows import metrics
    from workflows.policy import PROVIDER_CALL_TIMEOUT, PROVIDER_RETRY

CALL_BUDGET = timedelta(hours=6)
"""How long each of the dispute's calls (the lookup, the email) is retried."""


class DisputeNotice(Dispute):
    """What the receiver starts a dispute's workflow with: the dispute and whom to tell."""

    notify: str
    """The operators' email address."""


@workflow.defn
class DisputeWorkflow:
    """A chargeback on one of the shop's payments, until it is won or lost."""

    def __init__(self) -> None:
        self._dispute: Dispute | None = None
        self._decided: str | None = None

    @workflow.run
    async def run(self, notice: DisputeNotice) -> Dispute:
        """Find the order, tell it and the operators, and wait for the bank's decision."""
        dispute = Dispute.model_validate(notice.model_dump(exclude={"notify"}))
        self._dispute = dispute
        found = await workflow.execute_activity_method(
            DisputeActivities.order_of_payment,
            dispute.payment_intent,
            start_to_close_timeout=PROVIDER_CALL_TIMEOUT,
            schedule_to_close_timeout=CALL_BUDGET,
            retry_policy=PROVIDER_RETRY,
        )
        dispute = self._dispute = dispute.model_copy(update={"order_id": found.order_id})
        order_id = found.order_id or f"payment-{dispute.payment_intent}"
        workflow.upsert_search_attributes(
            [
                search_attributes.ORDER_STATUS.value_set(OrderStatus.DISPUTED.value),
                search_attributes.ORDER_ID.value_set(order_id),
            ]
        )
        metrics.dispute_opened(dispute.reason)
        await self._tell_order(dispute)
        await self._tell_operators(order_id, dispute, notice.notify)
        await workflow.wait_condition(lambda: self._decided is not None)
        decided = dispute.model_copy(update={"status": self._decided})
        self._dispute = decided
        workflow.upsert_search_attributes(
            [search_attributes.ORDER_STATUS.value_set(f"dispute-{decided.status}")]
        )
        return decided

    async def _tell_order(self, dispute: Dispute) -> None:
        """A running order records it; an ended one cannot (its status reads it from here)."""
        if dispute.order_id is None:
            return
        order = workflow.get_external_workflow_handle(dispute.order_id)
        try:
            await order.signal("dispute_opened", dispute)
        except FailureError:  # the order's workflow has ended (or never was)
            workflow.logger.info(
                "order %s is not running: the dispute stays here", dispute.order_id
            )

    async def _tell_operators(self, order_id: str, dispute: Dispute, notify: str) -> None:
        content = emails.dispute_opened(order_id, dispute)
        request = EmailRequest(
            order_id=order_id,
            idempotency_key=f"{idempotency_key(order_id, Step.DISPUTE_EMAIL)}:{dispute.id}",
            step=Step.DISPUTE_EMAIL,
            to=notify,
            template=content.template,
            subject=content.subject,
            body=content.body,
        )
        await workflow.execute_activity_method(
            MailActivities.send_email,
            request,
            start_to_close_timeout=PROVIDER_CALL_TIMEOUT,
            schedule_to_close_timeout=CALL_BUDGET,
            retry_policy=PROVIDER_RETRY,
        )

    @workflow.signal
    def closed(self, status: str) -> None:
        """``charge.dispute.closed``: the bank decided (``won`` or ``lost``)."""
        self._decided = status

    @workflow.query
    def dispute(self) -> Dispute | None:
        """The dispute as it stands."""
        return self._dispute
