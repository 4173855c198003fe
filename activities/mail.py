"""Customer emails through the mail service."""

from pydantic import BaseModel
from temporalio import activity

from activities.logging import log_step
from activities.provider_client import ProviderClient
from domain.status import EmailTemplate, Step


class EmailRequest(BaseModel):
    """One rendered email for one order."""

    order_id: str
    step: Step
    to: str
    template: EmailTemplate
    subject: str
    body: str
    idempotency_key: str


class EmailReceipt(BaseModel):
    """The mail service's id for a sent message."""

    id: str


class MailActivities:
    """Activities that talk to the mail service."""

    def __init__(self, mail: ProviderClient) -> None:
        self._mail = mail

    @activity.defn
    async def send_email(self, request: EmailRequest) -> EmailReceipt:
        """Send the email once; a retry with the same key gets the first receipt back."""
        body = request.model_dump(mode="json", exclude={"idempotency_key", "step"})
        answer = await self._mail.post("/messages", body, idempotency_key=request.idempotency_key)
        receipt = EmailReceipt.model_validate(answer)
        log_step(request.order_id, request.step, f"sent {request.template.value} {receipt.id}")
        return receipt
