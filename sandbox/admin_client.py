"""A client for the sandbox providers' admin API: ledger counts and fault injection.

Tests, the crash demo and the benchmark count effects here, at the provider, because that is
where a double charge or a second email would show.
"""

import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import httpx

from orders.domain.status import RefundStatus

SERVICES = ("payments", "mail", "warehouse")


@dataclass(frozen=True)
class Effects:
    """What the providers' ledger holds for one order; amounts are in minor units.

    ``charges``/``charged_amount``: captured money (it moved). ``authorizations``/
    ``authorized_amount``: charges an approved confirm made, captured or not.
    ``released``/``released_amount``: authorizations a cancel let go, or that expired (no money
    moved).
    ``refunds``/``refunded_amount``: refunds of any status; ``refunds_by_status`` and
    ``refunded_by_status`` split them (only ``succeeded`` ones returned money). ``ids``: kind
    (``payment_intent``, ``charge``, ``refund``, ``picklist``) -> row ids, oldest first.
    ``currencies``: the currencies (lower case) the order's money was handled in.
    ``disputes``: chargebacks opened on its payment.
    """

    payment_intents: int = 0
    charges: int = 0
    refunds: int = 0
    emails: dict[str, int] | None = None
    picklists: int = 0
    cancelled_picklists: int = 0
    cancelled_intents: int = 0
    charged_amount: int = 0
    refunded_amount: int = 0
    authorizations: int = 0
    authorized_amount: int = 0
    released: int = 0
    released_amount: int = 0
    disputes: int = 0
    failed_events: int = 0
    """The gateway's Stripe events about the order that the receiver refused for good."""
    ids: dict[str, list[str]] | None = None
    refunds_by_status: dict[str, int] | None = None
    refunded_by_status: dict[str, int] | None = None
    currencies: list[str] | None = None

    def emails_of(self, template: str) -> int:
        """How many emails of one template went out."""
        return (self.emails or {}).get(template, 0)

    def ids_of(self, kind: str) -> list[str]:
        """The ids of the order's rows of one kind (``charge``...), oldest first."""
        return (self.ids or {}).get(kind, [])

    @property
    def returned(self) -> int:
        """How many refunds gave money back (succeeded)."""
        return (self.refunds_by_status or {}).get(RefundStatus.SUCCEEDED, 0)

    @property
    def returned_amount(self) -> int:
        """The money refunds gave back: those that succeeded, not pending or failed ones."""
        return (self.refunded_by_status or {}).get(RefundStatus.SUCCEEDED, 0)


@dataclass(frozen=True)
class LedgerView:
    """The whole ledger: each order's effects, and those of rows that carry no order id."""

    orders: dict[str, Effects]
    unattributed: Effects


class SandboxAdmin:
    """Reads the ledger and sets faults on a running providers process."""

    def __init__(self, base_url: str, api_key: str) -> None:
        self.base_url = base_url
        self.api_key = api_key
        self._http = httpx.Client(
            base_url=base_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=10.0
        )

    def effects(self, order_id: str) -> Effects:
        """Effects recorded for one order (all zero if the providers never saw it)."""
        return self.all_effects(order_id).get(order_id, Effects())

    def all_effects(self, order_id: str | None = None) -> dict[str, Effects]:
        """Effects per order id, for one order or for every order."""
        params = {"order_id": order_id} if order_id else {}
        orders = self._get("/admin/ledger", params)["orders"]
        return {oid: Effects(**counts) for oid, counts in orders.items()}

    def ledger(self) -> LedgerView:
        """Every order's effects and the unattributed rows', read in one request."""
        summary = self._get("/admin/ledger", {})
        orders = {oid: Effects(**counts) for oid, counts in summary["orders"].items()}
        return LedgerView(orders, Effects(**summary["unattributed"]))

    def set_faults(self, service: str, **faults: float | str | bool) -> dict[str, Any]:
        """Set faults on one service (``error_rate``, ``refuse_next``, ``key_prefix``...)."""
        state: dict[str, Any] = self._check(self._http.put(f"/admin/faults/{service}", json=faults))
        return state

    def set_faults_everywhere(self, **faults: float | str | bool) -> None:
        """Set the same faults on every service."""
        for service in SERVICES:
            self.set_faults(service, **faults)

    def release(self, service: str, fail: bool = False) -> int:
        """Let held requests of one service commit, or with ``fail`` answer 503 uncommitted.

        Returns how many requests were held.
        """
        response = self._http.post(f"/admin/faults/{service}/release", params={"fail": fail})
        released: int = self._check(response)["released"]
        return released

    def deliver(self, service: str) -> int:
        """Let the requests one service delays on their way in (``delay_next``) arrive.

        Returns how many there were; each then claims its key as if it had just been sent.
        """
        response = self._http.post(f"/admin/faults/{service}/deliver")
        delivered: int = self._check(response)["delivered"]
        return delivered

    def delayed_keys(self) -> dict[str, list[str]]:
        """The idempotency keys of the requests each service delays before their claim."""
        keys: dict[str, list[str]] = self._get("/admin/delayed/keys", {})
        return keys

    def keys(self, prefix: str) -> list[dict[str, Any]]:
        """The idempotency keys starting with ``prefix``, oldest first, with what each holds.

        Each has ``key`` and ``state`` (``in_flight`` or ``done``); a done key also has the
        ``status`` and ``body`` it answered.
        """
        data: list[dict[str, Any]] = self._get("/admin/keys", {"prefix": prefix})["data"]
        return data

    def fired(self, service: str, prefix: str = "") -> Counter[str]:
        """How often each fault (``fail``, ``drop``, ``hold``...) fired at ``service``.

        Counted at the provider, on keys starting with ``prefix``: proof that a fault set took
        effect (a ``key_prefix`` that matches nothing leaves it empty).
        """
        fired = self._get("/admin/faults/fired", {"prefix": prefix})[service]
        return Counter(entry["fault"] for entry in fired)

    def unfired(self, service: str) -> dict[str, int]:
        """The ``*_next`` faults of ``service`` still waiting to fire (none: all have fired)."""
        config = self._get("/admin/faults", {})[service]
        return {name: n for name, n in config.items() if name.endswith("_next") and n}

    def held(self) -> dict[str, int]:
        """How many requests each service is holding right now."""
        held: dict[str, int] = self._get("/admin/held", {})
        return held

    def held_keys(self) -> dict[str, list[str]]:
        """The idempotency keys (``<order id>:<step>``) of the requests each service holds."""
        keys: dict[str, list[str]] = self._get("/admin/held/keys", {})
        return keys

    def wait_held(self, service: str, count: int, timeout: float = 30.0) -> None:
        """Wait until ``service`` holds ``count`` requests."""
        deadline = time.monotonic() + timeout
        while (held := self.held()[service]) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{service} holds {held} request(s), not {count}")
            time.sleep(0.05)

    def ship_anyway(self, order_id: str) -> dict[str, Any]:
        """The warehouse ships the order's picklist even if it was never released (a mistake)."""
        [picklist] = self.list("/warehouse/picklists", order_id=order_id)
        response = self._http.post(
            f"/warehouse/picklists/{picklist['id']}/ship",
            json={"ignore_release": True},
            headers={"Idempotency-Key": f"{order_id}:ship-anyway"},
        )
        shipped: dict[str, Any] = self._check(response)
        return shipped

    def rate_limits(self) -> dict[str, dict[str, float]]:
        """The gateway's rate limits and its requests so far (``GET /admin/rate-limits``).

        ``limits`` per second, requests ``admitted`` and ``refused`` (429 ``rate_limit``), each
        by kind: ``read``, ``write``, ``search``.
        """
        counts: dict[str, dict[str, float]] = self._get("/admin/rate-limits", {})
        return counts

    def expire_keys(self, prefix: str) -> int:
        """Make the providers forget answered keys starting with ``prefix`` (as 24 h would)."""
        expired: int = self._check(
            self._http.post("/admin/keys/expire", params={"prefix": prefix})
        )["expired"]
        return expired

    def reset_faults(self) -> None:
        """No faults anywhere; held requests are released."""
        self._check(self._http.delete("/admin/faults"))

    def set_stock(self, sku: str, on_hand: int) -> None:
        """Give a sku a finite stock at the warehouse (skus without one are unlimited)."""
        self._check(self._http.put(f"/warehouse/stock/{sku}", json={"on_hand": on_hand}))

    def stock(self, sku: str) -> int | None:
        """Units of a sku on hand; None when its stock is unlimited."""
        rows = self._get("/warehouse/stock", {})["data"]
        return next((int(row["on_hand"]) for row in rows if row["sku"] == sku), None)

    def list(self, path: str, **params: str) -> list[dict[str, Any]]:
        """A provider listing such as ``/payments/charges``."""
        data: list[dict[str, Any]] = self._get(path, params)["data"]
        return data

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def _get(self, path: str, params: dict[str, str]) -> Any:
        return self._check(self._http.get(path, params=params))

    @staticmethod
    def _check(response: httpx.Response) -> Any:
        response.raise_for_status()
        return response.json()
