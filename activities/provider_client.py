"""One small HTTP client per provider service, reused across activity calls."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from activities import metrics
from activities.errors import error_for_response, error_for_transport
from activities.heartbeat import heartbeating
from config.settings import ProviderSettings
from telemetry.http_tracing import client_span, record_status
from telemetry.names import ProviderErrorKind


class ProviderClient:
    """Calls one sandbox service (payments, mail or warehouse) with its API key.

    Every mutating call carries an ``Idempotency-Key``; any failure is raised as a Temporal
    ``ApplicationError`` that says whether a retry may help.
    """

    def __init__(self, service: str, settings: ProviderSettings) -> None:
        self.service = service
        self._http = httpx.AsyncClient(
            base_url=f"{settings.base_url.rstrip('/')}/{service}",
            headers={"Authorization": f"Bearer {settings.api_key}"},
            timeout=settings.request_timeout_seconds,
        )

    async def post(
        self, path: str, body: dict[str, Any], *, idempotency_key: str
    ) -> dict[str, Any]:
        """POST a JSON body under an idempotency key and return the JSON answer."""
        request = self._http.build_request(
            "POST", path, json=body, headers={"Idempotency-Key": idempotency_key}
        )
        return await self._send(request)

    async def get(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        """GET a JSON listing (reads have no effect, so they need no key)."""
        return await self._send(self._http.build_request("GET", path, params=params))

    async def _send(self, request: httpx.Request) -> dict[str, Any]:
        name = f"{request.method} /{self.service}"
        metrics.provider_called(self.service)
        with client_span(name, request.method, str(request.url), request.headers) as span:
            try:
                response = await heartbeating(self._http.send(request))
            except httpx.TransportError as err:
                metrics.provider_error(self.service, ProviderErrorKind.UNAVAILABLE)
                raise error_for_transport(self.service, err) from err
            record_status(span, response.status_code)
        if response.headers.get("Idempotent-Replayed") == "true":
            metrics.provider_error(self.service, ProviderErrorKind.REPLAYED)
        if response.is_error:
            error = error_for_response(self.service, response)
            metrics.provider_error(self.service, metrics.error_kind(error))
            raise error
        result: dict[str, Any] = response.json()
        return result

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()


@dataclass
class ProviderClients:
    """The three service clients a worker shares across all activity calls."""

    payments: ProviderClient
    mail: ProviderClient
    warehouse: ProviderClient


@asynccontextmanager
async def open_provider_clients(settings: ProviderSettings) -> AsyncIterator[ProviderClients]:
    """Open one client per service and close them all on exit."""
    clients = ProviderClients(
        payments=ProviderClient("payments", settings),
        mail=ProviderClient("mail", settings),
        warehouse=ProviderClient("warehouse", settings),
    )
    try:
        yield clients
    finally:
        for client in (clients.payments, clients.mail, clients.warehouse):
            await client.aclose()
