"""3-D Secure with real processes: the customer's link, their click, and what the order does.

The sandbox gateway answers a confirm with Stripe's 3-D Secure test cards with
``requires_action`` and a ``redirect_to_url`` to its authentication page (the worker's confirm
names the order's ``return_url``, where the page then offers the way back). The order must not
take that for an authorization: it emails the link and waits; nothing is reserved or captured
until the customer completes authentication. The ledger, not the order's word, says what
happened. One test clicks through it in headless Chromium as a customer would.
"""

import asyncio
import os
from datetime import timedelta

import pytest
from temporalio.client import Client

from orders.client.orders import start_order
from orders.config.settings import PaymentReturnUrl
from orders.domain.models import OrderOptions
from orders.domain.status import EmailTemplate, OrderStatus
from sandbox.admin_client import SandboxAdmin
from tests.browser import Browser, chromium
from tests.support import authenticate, authentication_link, make_order, wait_for_status
from workflows.authentication import NOT_AUTHENTICATED

ASKED = EmailTemplate.AUTHENTICATION_REQUIRED.value
REMINDED = EmailTemplate.AUTHENTICATION_REMINDER.value
CONFIRMED = EmailTemplate.ORDER_CONFIRMATION.value


def click_through(mail_page: str, link: str) -> tuple[str, str]:
    """Open the mail page, click the email's link, click "Complete": what the page then says,
    and where its way back to the shop leads."""
    with Browser() as browser:
        browser.open(mail_page)
        browser.wait_for(f"document.querySelector('a[href=\"{link}\"]') !== null")
        browser.evaluate(f"document.querySelector('a[href=\"{link}\"]').click()")
        browser.wait_for("document.getElementById('complete') !== null")
        browser.evaluate("document.getElementById('complete').click()")
        outcome: str = browser.wait_for(
            "document.getElementById('outcome') && document.getElementById('outcome').textContent"
        )
        back: str = browser.evaluate("document.getElementById('return').href")
        return outcome, back


async def test_the_customer_authenticates_from_the_email_in_a_browser_and_the_order_goes_on(
    client: Client, sandbox: SandboxAdmin, task_queue: str
) -> None:
    if chromium() is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: scripts/setup-test-tools installs it (as root)")
        pytest.skip("chromium is missing: run scripts/setup-test-tools as root")
    order = make_order(payment_method="pm_card_authenticationRequired")
    await start_order(client, order, task_queue)
    waiting = await wait_for_status(client, order.id, OrderStatus.AWAITING_AUTHENTICATION)
    assert waiting.transaction_id is None
    [intent] = sandbox.list("/payments/intents", order_id=order.id)
    assert intent["status"] == "requires_action"

    link = await authentication_link(sandbox, order.id)
    mail_page = f"{sandbox.base_url}/mail/?api_key={sandbox.api_key}"
    outcome, back = await asyncio.to_thread(click_through, mail_page, link)
    assert "Authentication completed" in outcome and "requires_capture" in outcome
    # The worker's confirm named the order's return_url: the customer's way back to the shop.
    shop = PaymentReturnUrl().for_order(order.id)
    assert back.startswith(f"{shop}?payment_intent={intent['id']}&")
    assert back.endswith("&redirect_status=succeeded")

    await wait_for_status(client, order.id, OrderStatus.AWAITING_SHIPMENT, within=60)
    effects = sandbox.effects(order.id)
    assert (effects.authorizations, effects.charges, effects.picklists) == (1, 1, 1)
    assert effects.emails == {ASKED: 1, CONFIRMED: 1}


@pytest.mark.parametrize(
    ("card", "answer", "reason"),
    [
        ("pm_card_threeDSecure2Required", "fail", "payment_intent_authentication_failure"),
        (
            "pm_card_authenticationRequiredChargeDeclinedInsufficientFunds",
            "complete",
            "insufficient_funds",
        ),
    ],
    ids=["authentication-failed", "declined-after-authentication"],
)
async def test_a_failed_or_declined_authentication_is_a_decline_with_nothing_reserved(
    client: Client, sandbox: SandboxAdmin, task_queue: str, card: str, answer: str, reason: str
) -> None:
    order = make_order(payment_method=card)
    await start_order(client, order, task_queue)
    await authenticate(sandbox, order.id, answer)

    view = await wait_for_status(client, order.id, OrderStatus.PAYMENT_DECLINED, within=60)
    assert view.failure_reason == f"payment declined: {reason}"
    effects = sandbox.effects(order.id)
    assert (effects.authorizations, effects.charges, effects.picklists) == (0, 0, 0)
    assert effects.emails == {ASKED: 1, EmailTemplate.PAYMENT_DECLINED.value: 1}


async def test_a_customer_who_never_authenticates_is_reminded_once_and_charged_nothing(
    client: Client, sandbox: SandboxAdmin, task_queue: str
) -> None:
    order = make_order(payment_method="pm_card_authenticationRequired")
    await start_order(
        client, order, task_queue, OrderOptions(authentication_wait=timedelta(seconds=6))
    )

    view = await wait_for_status(client, order.id, OrderStatus.CANCELLED, within=60)
    assert view.failure_reason == f"cancelled: {NOT_AUTHENTICATED}"
    effects = sandbox.effects(order.id)
    assert (effects.authorizations, effects.charges, effects.picklists) == (0, 0, 0)
    assert effects.emails == {ASKED: 1, REMINDED: 1, EmailTemplate.ORDER_CANCELLED.value: 1}
    [intent] = sandbox.list("/payments/intents", order_id=order.id)
    assert intent["status"] == "canceled"  # the link can no longer authorize anything
