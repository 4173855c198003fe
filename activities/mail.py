"""Customer emails through the mail service's Resend API (``activities.resend_client``).

Every email carries the step's idempotency key (a provider with a key window sends it once)
and a ``Message-ID`` made from the order and the template only: should a provider that honours
no key (Amazon SES, SendGrid, Postmark) get the same email twice after a lost answer, both
copies are the same message to the customer's mail client, which shows it once.
"""

import resend
from pydantic import BaseModel
from temporalio import activity

from activities import resend_client
from activities.logging import log_step
from activities.provider_client import ProviderClient
from activities.requests import EffectRequest
from orders.domain.status import EmailTemplate, Step

SENDER = "Shop <orders@shop.example>"
"""The ``from`` of every email (an address on the shop's verified sending domain)."""
MESSAGE_ID_DOMAIN = "orders.shop.example"


class EmailRequest(EffectRequest):
    """One rendered email for one order."""

    step: Step
    to: str
    template: EmailTemplate
    subject: str
    body: str


class EmailReceipt(BaseModel):
    """The mail service's id for a sent message."""

    id: str


def message_id(order_id: str, template: EmailTemplate) -> str:
    """The ``Message-ID`` of an order's email: the same for every copy, from any worker."""
    return f"<{order_id}.{template.value}@{MESSAGE_ID_DOMAIN}>"


class MailActivities:
    """Activities that talk to the mail service."""

    def __init__(self, mail: ProviderClient) -> None:
        self._mail = mail

    @activity.defn
    async def send_email(self, request: EmailRequest) -> EmailReceipt:
        """Send the email once; a retry with the same key gets the first receipt back.

        An operator's retry first adopts this order's message of the same template if an earlier
        try sent it without our hearing the answer (under another key, or one expired since).
        """
        if request.adopt_existing and (receipt := await self._sent_before(request)):
            log_step(request.order_id, request.step, f"adopted {receipt.id}")
            return receipt
        params: resend.Emails.SendParams = {
            "from": SENDER,
            "to": [request.to],
            "subject": request.subject,
            "text": request.body,
            "headers": {"Message-ID": message_id(request.order_id, request.template)},
            "tags": [
                {"name": "order_id", "value": request.order_id},
                {"name": "template", "value": request.template.value},
            ],
        }
        receipt = EmailReceipt(id=await resend_client.send(params, request.idempotency_key))
        log_step(request.order_id, request.step, f"sent {request.template.value} {receipt.id}")
        return receipt

    async def _sent_before(self, request: EmailRequest) -> EmailReceipt | None:
        """The sandbox's ledger listing (Resend's own log would serve a real shop)."""
        params = {"order_id": request.order_id, "template": request.template.value}
        sent = (await self._mail.get("/messages", params))["data"]
        return EmailReceipt.model_validate(sent[0]) if sent else None
