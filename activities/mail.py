"""Customer emails through the mail service."""

from pydantic import BaseModel
from temporalio import activity

from activities.logging import log_step
from activities.provider_client import ProviderClient
from activities.requests import EffectRequest
from domain.status import EmailTemplate, Step


class EmailRequest(EffectRequest):
    """One rendered email for one order."""

    step: Step
    to: str
    template: EmailTemplate
    subject: str
    body: str


_MESSAGE_FIELDS = {"order_id", "to", "template", "subject", "body"}


class EmailReceipt(BaseModel):
    """The mail service's id for a sent message."""

    id: str


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
        body = request.model_dump(mode="json", include=_MESSAGE_FIELDS)
        answer = await self._mail.post("/messages", body, idempotency_key=request.idempotency_key)
        receipt = EmailReceipt.model_validate(answer)
        log_step(request.order_id, request.step, f"sent {request.template.value} {receipt.id}")
        return receipt

    async def _sent_before(self, request: EmailRequest) -> EmailReceipt | None:
        params = {"order_id": request.order_id, "template": request.template.value}
        sent = (await self._mail.get("/messages", params))["data"]
        return EmailReceipt.model_validate(sent[0]) if sent else None
