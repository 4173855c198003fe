"""Contract tests for the sandbox providers, run against a real ``python -m sandbox`` process."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from orders.domain.stripe_currencies import MINIMUM_CHARGE
from sandbox.admin_client import SandboxAdmin
from sandbox.stripe import payment_intents
from tools.stack.processes import free_port

REPO = Path(__file__).resolve().parents[1]
API_KEY = "sk_test_contract"
SHIP_TO = {
    "name": "Ada",
    "line1": "1 Main St",
    "city": "Berlin",
    "postal_code": "10115",
    "country": "DE",
}


class Provider:
    """One ``python -m sandbox`` subprocess on a SQLite file."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self.url = ""
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        args = ["--port", str(port), "--db", str(self.db), "--api-key", API_KEY]
        cmd = [sys.executable, "-m", "sandbox", *args]
        log = self.db.parent / "providers.log"
        with log.open("ab") as out:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, log.read_text()
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).json() == {"ok": True}:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        raise TimeoutError("providers did not become ready")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # SIGKILL: no chance to clean up, like a crash
            self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Provider]:
    server = Provider(tmp_path_factory.mktemp("providers") / "ledger.sqlite3")
    server.start()
    try:
        yield server
    finally:
        server.kill()


def _client(provider: Provider) -> httpx.Client:
    auth = {"Authorization": f"Bearer {API_KEY}"}
    return httpx.Client(base_url=provider.url, headers=auth, timeout=10)


@pytest.fixture
def http(provider: Provider) -> Iterator[httpx.Client]:
    with _client(provider) as session:
        yield session
        session.delete("/admin/faults")  # no test leaks its faults into the next


@pytest.fixture
def order_id() -> str:
    return f"order-{uuid.uuid4().hex[:8]}"


def post(http: httpx.Client, path: str, body: Any = None, key: str | None = None) -> httpx.Response:
    return http.post(path, json=body, headers={"Idempotency-Key": key or str(uuid.uuid4())})


def listing(http: httpx.Client, path: str, **params: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = http.get(path, params=params).json()["data"]
    return data


def count(http: httpx.Client, path: str, **params: str) -> int:
    return len(listing(http, path, **params))


def error_of(response: httpx.Response) -> tuple[int, str, str, str]:
    """Status, error type, code and message of an error answer."""
    error = response.json()["error"]
    return response.status_code, error["type"], error["code"], error["message"]


def resource_in_use(kind: str, resource_id: str) -> tuple[int, str, str, str]:
    message = f"Another request on {kind} '{resource_id}' is still in progress; retry later."
    return 409, "idempotency_error", "resource_in_use", message


def form(
    http: httpx.Client, path: str, params: dict[str, Any] | None = None, key: str | None = None
) -> httpx.Response:
    """POST Stripe's way: form-encoded, nested names in brackets (``metadata[order_id]``)."""
    fields: dict[str, str] = {}
    for name, value in (params or {}).items():
        if isinstance(value, dict):
            fields.update({f"{name}[{sub}]": str(item) for sub, item in value.items()})
        else:
            fields[name] = str(value)
    headers = {"Idempotency-Key": key or str(uuid.uuid4())}
    return http.post(path, data=fields, headers=headers)


def intent_params(order_id: str, method: str = "pm_card_visa", **more: Any) -> dict[str, Any]:
    """A card intent's parameters: cards only, so a confirm needs no ``return_url``."""
    return {
        "amount": 2500,
        "currency": "eur",
        "payment_method": method,
        "payment_method_types": {"0": "card"},
        "metadata": {"order_id": order_id},
        **more,
    }


def intent(
    http: httpx.Client, order_id: str, method: str = "pm_card_visa", **more: Any
) -> dict[str, Any]:
    response = form(http, "/v1/payment_intents", intent_params(order_id, method, **more))
    assert response.status_code == 200, response.text
    created: dict[str, Any] = response.json()
    return created


def stripe_error(response: httpx.Response) -> tuple[int, str, str | None]:
    """Status, error type and code of a Stripe-shaped error answer."""
    error = response.json()["error"]
    return response.status_code, error["type"], error.get("code")


LOCK_TIMEOUT = (429, "invalid_request_error", "lock_timeout")
UNEXPECTED_STATE = (400, "invalid_request_error", "payment_intent_unexpected_state")


def message(order_id: str, subject: str = "Thanks") -> dict[str, str]:
    return {
        "order_id": order_id,
        "to": "ada@example.com",
        "template": "order-confirmation",
        "subject": subject,
        "body": "Your order is confirmed.",
    }


def picklist(order_id: str, sku: str, quantity: int = 1) -> dict[str, Any]:
    return {"order_id": order_id, "items": [{"sku": sku, "quantity": quantity}], "ship_to": SHIP_TO}


def stock_of(http: httpx.Client, sku: str) -> int:
    [row] = [row for row in listing(http, "/warehouse/stock") if row["sku"] == sku]
    on_hand: int = row["on_hand"]
    return on_hand


def wait_held(http: httpx.Client, service: str, n: int) -> None:
    deadline = time.monotonic() + 10
    while http.get("/admin/held").json()[service] != n:
        assert time.monotonic() < deadline, f"{service} never held {n} request(s)"
        time.sleep(0.02)


def wait_delayed(http: httpx.Client, service: str, key: str) -> None:
    deadline = time.monotonic() + 10
    while key not in http.get("/admin/delayed/keys").json()[service]:
        assert time.monotonic() < deadline, f"{service} never delayed {key}"
        time.sleep(0.02)


def stored_under(http: httpx.Client, key: str) -> list[dict[str, Any]]:
    """What the provider keeps under exactly ``key`` (nothing, or one entry)."""
    keys = http.get("/admin/keys", params={"prefix": key}).json()["data"]
    return [entry for entry in keys if entry["key"] == key]


@contextmanager
def holding(
    http: httpx.Client, service: str, call: Callable[[], httpx.Response]
) -> Iterator[Future[httpx.Response]]:
    """Run ``call`` in the background and yield once the provider holds it.

    Whatever the test does, the request is released on the way out, so the pool can shut down.
    """
    http.put(f"/admin/faults/{service}", json={"hold_next": 1})
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(call)
        try:
            wait_held(http, service, 1)
            yield future
        finally:
            http.post(f"/admin/faults/{service}/release")


def held_then_released(http: httpx.Client, service: str, *calls: Callable[[], Any]) -> list[Any]:
    """Hold ``calls`` inside the provider until all arrived, then let them race."""
    http.put(f"/admin/faults/{service}", json={"hold_next": len(calls)})
    with ThreadPoolExecutor(len(calls)) as pool:
        futures: list[Future[Any]] = [pool.submit(call) for call in calls]
        wait_held(http, service, len(calls))
        assert http.post(f"/admin/faults/{service}/release").json() == {"released": len(calls)}
        return [future.result(timeout=10) for future in futures]


def test_auth(provider: Provider, http: httpx.Client) -> None:
    assert httpx.get(f"{provider.url}/healthz").json() == {"ok": True}
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        response = httpx.get(f"{provider.url}/payments/charges", headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthorized"
    unauthenticated = httpx.post(f"{provider.url}/mail/messages", json={})
    assert unauthenticated.status_code == 401
    for headers in ({}, {"Authorization": "Bearer sk_test_wrong_1234"}):
        stripe_401 = httpx.get(f"{provider.url}/v1/payment_intents/pi_x", headers=headers)
        assert stripe_401.status_code == 401
        assert set(stripe_401.json()["error"]) == {"type", "message"}  # Stripe's: no code
        assert stripe_401.json()["error"]["type"] == "invalid_request_error"
        assert stripe_401.headers["request-id"].startswith("req_")
    # Stripe takes the key from the Authorization header only, Bearer or Basic (as user name).
    query_key = httpx.get(f"{provider.url}/v1/charges", params={"api_key": API_KEY})
    assert query_key.status_code == 401
    assert httpx.get(f"{provider.url}/v1/charges", auth=(API_KEY, "")).status_code == 200
    assert httpx.get(f"{provider.url}/mail/messages?api_key={API_KEY}").status_code == 200


def test_post_without_idempotency_key(http: httpx.Client, order_id: str) -> None:
    response = http.post("/mail/messages", json=message(order_id))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "idempotency_key_missing"
    assert count(http, "/mail/messages", order_id=order_id) == 0


def test_replay_returns_identical_body_and_no_second_effect(
    http: httpx.Client, order_id: str
) -> None:
    first = post(http, "/mail/messages", message(order_id), key=f"{order_id}-mail")
    again = post(http, "/mail/messages", message(order_id), key=f"{order_id}-mail")
    assert first.status_code == again.status_code == 200
    assert again.content == first.content
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"
    assert count(http, "/mail/messages", order_id=order_id) == 1


def test_key_reused_with_another_body_or_endpoint(http: httpx.Client, order_id: str) -> None:
    key = f"{order_id}-mail"
    assert post(http, "/mail/messages", message(order_id), key=key).status_code == 200
    for path, body in (
        ("/mail/messages", message(order_id, subject="Different")),
        ("/warehouse/picklists", picklist(order_id, "SKU-ANY")),
    ):
        response = post(http, path, body, key=key)
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "idempotency_key_reused"
    assert count(http, "/mail/messages", order_id=order_id) == 1
    assert count(http, "/warehouse/picklists", order_id=order_id) == 0


def test_key_in_flight_is_409(http: httpx.Client, order_id: str) -> None:
    key = f"{order_id}-mail"
    with holding(
        http, "mail", lambda: post(http, "/mail/messages", message(order_id), key)
    ) as first:
        busy = post(http, "/mail/messages", message(order_id), key=key)
        assert busy.status_code == 409
        assert busy.json()["error"]["code"] == "idempotency_key_in_use"
        assert http.post("/admin/faults/mail/release").json() == {"released": 1}
        assert first.result(timeout=10).status_code == 200
    replay = post(http, "/mail/messages", message(order_id), key=key)
    assert replay.content == first.result().content
    assert count(http, "/mail/messages", order_id=order_id) == 1


def test_key_in_flight_is_409_whatever_the_body_and_422_only_once_done(
    http: httpx.Client, order_id: str
) -> None:
    """A 422 is final to the caller, who may then move on to a new key: while the first request
    under the key can still commit, any other request under it is told to retry (409)."""
    key = f"{order_id}-mail"
    other_body = ("/mail/messages", message(order_id, subject="Different"))
    other_path = ("/warehouse/picklists", picklist(order_id, "SKU-ANY"))
    in_use = f"A request with idempotency key '{key}' is still in progress; retry later."
    with holding(
        http, "mail", lambda: post(http, "/mail/messages", message(order_id), key)
    ) as first:
        for path, body in (other_body, other_path):
            busy = post(http, path, body, key=key)
            assert error_of(busy) == (409, "idempotency_error", "idempotency_key_in_use", in_use)
        assert http.post("/admin/faults/mail/release").json() == {"released": 1}
        assert first.result(timeout=10).status_code == 200
    for path, body in (other_body, other_path):
        reused = post(http, path, body, key=key)
        assert reused.status_code == 422
        assert reused.json()["error"]["code"] == "idempotency_key_reused"
    assert count(http, "/mail/messages", order_id=order_id) == 1
    assert count(http, "/warehouse/picklists", order_id=order_id) == 0


def test_confirm_twice_with_different_keys_charges_once(http: httpx.Client, order_id: str) -> None:
    intent_id = intent(http, order_id)["id"]
    confirm = f"/v1/payment_intents/{intent_id}/confirm"
    first = form(http, confirm)
    second = form(http, confirm)
    assert first.status_code == 200, first.text
    confirmed = first.json()
    assert (confirmed["status"], confirmed["amount_received"]) == ("succeeded", 2500)
    assert confirmed["latest_charge"].startswith("ch_")
    # Stripe's answer to confirming again: the intent is in no state to be confirmed.
    assert stripe_error(second) == UNEXPECTED_STATE
    assert second.json()["error"]["payment_intent"] == confirmed
    [charge] = listing(http, "/payments/charges", order_id=order_id)
    assert (charge["id"], charge["amount"], charge["payment_intent"]) == (
        confirmed["latest_charge"],
        2500,
        intent_id,
    )
    assert (charge["captured"], charge["status"]) == (True, "succeeded")
    assert listing(http, "/payments/intents", order_id=order_id) == [confirmed]


def test_cancel_before_confirm_and_confirm_refused(http: httpx.Client, order_id: str) -> None:
    intent_id = intent(http, order_id)["id"]
    cancel, confirm = (f"/v1/payment_intents/{intent_id}/{verb}" for verb in ("cancel", "confirm"))
    cancelled = form(http, cancel, {"cancellation_reason": "abandoned"})
    assert cancelled.status_code == 200
    assert (cancelled.json()["status"], cancelled.json()["latest_charge"]) == ("canceled", None)
    assert cancelled.json()["cancellation_reason"] == "abandoned"
    again = form(http, cancel)  # Stripe refuses to cancel a canceled intent
    assert stripe_error(again) == UNEXPECTED_STATE
    assert again.json()["error"]["payment_intent"] == cancelled.json()
    key = f"{order_id}:payment-confirm"
    refused = form(http, confirm, key=key)
    assert stripe_error(refused) == UNEXPECTED_STATE
    assert refused.json()["error"]["message"] == (
        "You cannot confirm this PaymentIntent because it has a status of canceled. Only a "
        "PaymentIntent with one of the following statuses may be confirmed: "
        "requires_payment_method, requires_confirmation, requires_action."
    )
    replay = form(http, confirm, key=key)  # a business error, stored under its key
    assert (replay.content, replay.headers["idempotent-replayed"]) == (refused.content, "true")
    assert form(http, confirm).status_code == 400
    assert count(http, "/payments/charges", order_id=order_id) == 0
    assert listing(http, "/payments/intents", order_id=order_id) == [cancelled.json()]


def test_cancel_after_capture_is_refused_and_names_the_charge(
    http: httpx.Client, order_id: str
) -> None:
    intent_id = intent(http, order_id)["id"]
    confirmed = form(http, f"/v1/payment_intents/{intent_id}/confirm").json()
    answer = form(http, f"/v1/payment_intents/{intent_id}/cancel")
    assert stripe_error(answer) == UNEXPECTED_STATE
    seen = answer.json()["error"]["payment_intent"]
    assert (seen["status"], seen["latest_charge"]) == ("succeeded", confirmed["latest_charge"])
    assert listing(http, "/payments/intents", order_id=order_id) == [confirmed]
    assert [c["id"] for c in listing(http, "/payments/charges", order_id=order_id)] == [
        confirmed["latest_charge"]
    ]


def test_cancel_of_an_authorization_releases_it(http: httpx.Client, order_id: str) -> None:
    intent_id = intent(http, order_id, capture_method="manual")["id"]
    authorized = form(http, f"/v1/payment_intents/{intent_id}/confirm").json()
    assert (authorized["status"], authorized["amount_capturable"]) == ("requires_capture", 2500)
    cancelled = form(http, f"/v1/payment_intents/{intent_id}/cancel")
    assert cancelled.json()["status"] == "canceled"
    [charge] = listing(http, "/payments/charges", order_id=order_id)
    assert (charge["captured"], charge["amount_captured"], charge["refunded"]) == (False, 0, True)
    counts = http.get("/admin/ledger", params={"order_id": order_id}).json()["orders"][order_id]
    assert (counts["authorizations"], counts["charges"], counts["charged_amount"]) == (1, 0, 0)
    assert (counts["released"], counts["released_amount"]) == (1, 2500)
    capture = form(http, f"/v1/payment_intents/{intent_id}/capture")
    assert stripe_error(capture) == UNEXPECTED_STATE


def test_cancel_while_confirm_in_flight_is_lock_timeout_then_names_the_charge(
    http: httpx.Client, order_id: str
) -> None:
    intent_id = intent(http, order_id)["id"]
    confirm, cancel = (f"/v1/payment_intents/{intent_id}/{verb}" for verb in ("confirm", "cancel"))
    cancel_key = f"{order_id}:payment-cancel"
    with holding(http, "payments", lambda: form(http, confirm, key=f"{order_id}:confirm")) as held:
        busy = form(http, cancel, key=cancel_key)
        assert stripe_error(busy) == LOCK_TIMEOUT
        assert http.post("/admin/faults/payments/release").json() == {"released": 1}
        confirmed = held.result(timeout=10).json()
    after = form(http, cancel, key=cancel_key)
    assert "idempotent-replayed" not in after.headers  # the 429 was not stored under its key
    assert stripe_error(after) == UNEXPECTED_STATE
    assert after.json()["error"]["payment_intent"]["latest_charge"] == confirmed["latest_charge"]
    assert count(http, "/payments/charges", order_id=order_id) == 1


def test_cancel_after_a_confirm_released_as_failure_cancels_for_good(
    http: httpx.Client, order_id: str
) -> None:
    intent_id = intent(http, order_id)["id"]
    confirm, cancel = (f"/v1/payment_intents/{intent_id}/{verb}" for verb in ("confirm", "cancel"))
    confirm_key = f"{order_id}:payment-confirm"
    with holding(http, "payments", lambda: form(http, confirm, key=confirm_key)) as held:
        assert stripe_error(form(http, cancel)) == LOCK_TIMEOUT
        http.post("/admin/faults/payments/release", params={"fail": True})
        assert held.result(timeout=10).status_code == 503
    cancelled = form(http, cancel)
    assert (cancelled.json()["status"], cancelled.json()["latest_charge"]) == ("canceled", None)
    for key in (confirm_key, None):  # the held confirm's retry, and any later confirm
        refused = form(http, confirm, key=key)
        assert refused.json()["error"]["code"] == "payment_intent_unexpected_state"
    assert count(http, "/payments/charges", order_id=order_id) == 0
    assert listing(http, "/payments/intents", order_id=order_id) == [cancelled.json()]


def test_two_confirms_on_one_intent_never_overlap(http: httpx.Client, order_id: str) -> None:
    intent_id = intent(http, order_id)["id"]
    confirm = f"/v1/payment_intents/{intent_id}/confirm"
    with holding(http, "payments", lambda: form(http, confirm, key=f"{order_id}:a")) as held:
        second = form(http, confirm, key=f"{order_id}:b")
        assert stripe_error(second) == LOCK_TIMEOUT
        http.post("/admin/faults/payments/release")
        first = held.result(timeout=10).json()
    retried = form(http, confirm, key=f"{order_id}:b")
    assert stripe_error(retried) == UNEXPECTED_STATE
    assert retried.json()["error"]["payment_intent"] == first
    assert [c["id"] for c in listing(http, "/payments/charges", order_id=order_id)] == [
        first["latest_charge"]
    ]
    assert listing(http, "/payments/intents", order_id=order_id) == [first]


def automatic_intent(http: httpx.Client, order_id: str, method: str = "pm_card_visa") -> str:
    """An intent created as the worker creates its own: no ``payment_method_types``."""
    params = intent_params(order_id, method)
    del params["payment_method_types"]
    response = form(http, "/v1/payment_intents", params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["automatic_payment_methods"] == {"allow_redirects": "always", "enabled": True}
    return str(body["id"])


def test_a_confirm_without_return_url_of_an_automatic_intent_is_refused_and_not_stored(
    http: httpx.Client, order_id: str
) -> None:
    intent_id = automatic_intent(http, order_id)
    path, key = f"/v1/payment_intents/{intent_id}/confirm", f"{order_id}:payment-confirm"
    refused = form(http, path, key=key)
    assert stripe_error(refused) == (400, "invalid_request_error", None)
    assert refused.json()["error"]["message"] == payment_intents.RETURN_URL_REQUIRED
    assert http.get(f"/v1/payment_intents/{intent_id}").json()["status"] == "requires_confirmation"
    # Refused as parameters are, before the key is taken: the same key with one goes through.
    confirmed = form(http, path, {"return_url": "https://shop.test/back"}, key=key)
    assert (confirmed.status_code, confirmed.json()["status"]) == (200, "succeeded")


@pytest.mark.parametrize(
    ("created", "confirmed"),
    [
        ({"automatic_payment_methods": {"enabled": "true", "allow_redirects": "never"}}, {}),
        ({}, {"off_session": "true"}),
        ({"automatic_payment_methods": {"enabled": "false"}}, {}),
    ],
    ids=["redirects-never", "off-session", "automatic-off"],
)
def test_an_automatic_intent_needs_no_return_url_where_stripe_needs_none(
    http: httpx.Client, order_id: str, created: dict[str, Any], confirmed: dict[str, Any]
) -> None:
    params = {**intent_params(order_id), **created}
    del params["payment_method_types"]
    intent_id = form(http, "/v1/payment_intents", params).json()["id"]
    answer = form(http, f"/v1/payment_intents/{intent_id}/confirm", confirmed)
    assert (answer.status_code, answer.json()["status"]) == (200, "succeeded")


def test_a_create_and_confirm_without_return_url_is_refused_and_creates_nothing(
    http: httpx.Client, order_id: str
) -> None:
    params = {**intent_params(order_id), "confirm": "true"}
    del params["payment_method_types"]
    refused = form(http, "/v1/payment_intents", params)
    assert stripe_error(refused) == (400, "invalid_request_error", None)
    assert listing(http, "/payments/intents", order_id=order_id) == []


def test_a_3d_secure_card_confirmed_off_session_is_declined_authentication_required(
    http: httpx.Client, order_id: str
) -> None:
    intent_id = intent(http, order_id, "pm_card_authenticationRequired")["id"]
    declined = form(http, f"/v1/payment_intents/{intent_id}/confirm", {"off_session": "true"})
    assert stripe_error(declined) == (402, "card_error", "authentication_required")
    assert declined.json()["error"]["payment_intent"]["status"] == "requires_payment_method"


@pytest.mark.parametrize(
    ("method", "code", "decline_code"),
    [
        ("pm_card_chargeDeclined", "card_declined", "generic_decline"),
        ("pm_card_chargeDeclinedInsufficientFunds", "card_declined", "insufficient_funds"),
        ("pm_card_chargeDeclinedExpiredCard", "expired_card", "expired_card"),
        ("pm_card_declined", "card_declined", "generic_decline"),
        ("pm_card_insufficient_funds", "card_declined", "insufficient_funds"),
        ("pm_card_expired", "expired_card", "expired_card"),
    ],
)
def test_decline_is_stored_and_replayed(
    http: httpx.Client, order_id: str, method: str, code: str, decline_code: str
) -> None:
    intent_id = intent(http, order_id, method)["id"]
    path = f"/v1/payment_intents/{intent_id}/confirm"
    declined = form(http, path, key=f"{order_id}-confirm")
    assert stripe_error(declined) == (402, "card_error", code)
    error = declined.json()["error"]
    assert error["decline_code"] == decline_code
    assert error["payment_intent"]["status"] == "requires_payment_method"
    assert error["payment_intent"]["last_payment_error"]["decline_code"] == decline_code
    replay = form(http, path, key=f"{order_id}-confirm")
    assert (replay.status_code, replay.content) == (402, declined.content)
    assert replay.headers["idempotent-replayed"] == "true"
    # A new key finds no payment method left to try: a failed intent cannot be charged.
    assert stripe_error(form(http, path)) == UNEXPECTED_STATE
    assert count(http, "/payments/charges", order_id=order_id) == 0
    [stored] = listing(http, "/payments/intents", order_id=order_id)
    assert (stored["status"], stored["payment_method"]) == ("requires_payment_method", None)


def test_refunds(http: httpx.Client, order_id: str) -> None:
    intent_id = intent(http, order_id)["id"]
    charge_id = form(http, f"/v1/payment_intents/{intent_id}/confirm").json()["latest_charge"]
    partial = form(http, "/v1/refunds", {"charge": charge_id, "amount": 1000})
    assert (partial.json()["amount"], partial.json()["payment_intent"]) == (1000, intent_id)
    [charge] = listing(http, "/payments/charges", order_id=order_id)
    assert (charge["refunded"], charge["amount_refunded"]) == (False, 1000)  # partly refunded
    too_much = form(http, "/v1/refunds", {"charge": charge_id, "amount": 1501})
    assert stripe_error(too_much) == (400, "invalid_request_error", "amount_too_large")
    assert too_much.json()["error"]["param"] == "amount"
    full = form(http, "/v1/refunds", {"payment_intent": intent_id})
    assert full.status_code == 200
    assert full.json()["amount"] == 1500 and full.json()["id"].startswith("re_")
    again = form(http, "/v1/refunds", {"charge": charge_id, "reason": "duplicate"})
    assert stripe_error(again) == (400, "invalid_request_error", "charge_already_refunded")
    assert count(http, "/payments/refunds", order_id=order_id) == 2
    [charge] = listing(http, "/payments/charges", order_id=order_id)
    assert (charge["refunded"], charge["amount_refunded"]) == (True, 2500)
    counts = http.get("/admin/ledger", params={"order_id": order_id}).json()["orders"][order_id]
    assert (counts["refunds"], counts["refunded_amount"]) == (2, 2500)


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        ("/v1/payment_intents/pi_nope/confirm", {}, 404),
        ("/v1/refunds", {"charge": "ch_nope"}, 400),
        ("/v1/refunds", {"payment_intent": "pi_nope"}, 400),
    ],
)
def test_unknown_resource_is_404_or_400_as_stripe_says(
    http: httpx.Client, path: str, params: dict[str, Any], status: int
) -> None:
    response = form(http, path, params)
    assert stripe_error(response) == (status, "invalid_request_error", "resource_missing")


def test_unknown_warehouse_resource_is_404(http: httpx.Client) -> None:
    response = post(http, "/warehouse/picklists/pl_nope/cancel", {})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "resource_missing"


def test_stock_out_of_stock_and_cancel(http: httpx.Client, order_id: str) -> None:
    sku = f"SKU-{order_id}"
    assert http.put(f"/warehouse/stock/{sku}", json={"on_hand": 2}).json() == {
        "sku": sku,
        "on_hand": 2,
    }
    key = f"{order_id}-big"
    short = post(http, "/warehouse/picklists", picklist(order_id, sku, 3), key=key)
    assert short.status_code == 422
    assert short.json()["error"] | {"message": ""} == {
        "type": "invalid_request",
        "code": "out_of_stock",
        "sku": sku,
        "message": "",
    }
    assert post(http, "/warehouse/picklists", picklist(order_id, sku, 3), key=key).content == (
        short.content
    )
    created = post(http, "/warehouse/picklists", picklist(order_id, sku, 2)).json()
    assert (created["status"], created["ship_to"]["line2"]) == ("open", None)
    assert stock_of(http, sku) == 0
    cancel = f"/warehouse/picklists/{created['id']}/cancel"
    cancelled = post(http, cancel).json()
    assert cancelled["status"] == "cancelled"
    assert post(http, cancel).json() == cancelled  # cancelling twice changes nothing
    assert stock_of(http, sku) == 2
    assert http.delete(f"/warehouse/stock/{sku}").json() == {"sku": sku, "on_hand": None}
    assert post(http, "/warehouse/picklists", picklist(order_id, sku, 99)).status_code == 200


def test_one_active_picklist_per_order(http: httpx.Client, order_id: str) -> None:
    sku = f"SKU-{order_id}"
    http.put(f"/warehouse/stock/{sku}", json={"on_hand": 5})
    first = post(http, "/warehouse/picklists", picklist(order_id, sku, 2), f"{order_id}:pick")
    again = post(http, "/warehouse/picklists", picklist(order_id, sku, 2), f"{order_id}:pick-2")
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert "idempotent-replayed" not in again.headers  # de-duplicated by order, not by key
    assert (count(http, "/warehouse/picklists", order_id=order_id), stock_of(http, sku)) == (1, 3)
    post(http, f"/warehouse/picklists/{first.json()['id']}/cancel")
    fresh = post(http, "/warehouse/picklists", picklist(order_id, sku, 2)).json()
    assert fresh["id"] != first.json()["id"]  # a cancelled picklist does not count
    assert (count(http, "/warehouse/picklists", order_id=order_id), stock_of(http, sku)) == (2, 3)


def test_picklist_in_flight_for_the_order_is_409(http: httpx.Client, order_id: str) -> None:
    body = picklist(order_id, "SKU-FREE")
    first_key, retry_key = f"{order_id}:picklist", f"{order_id}:picklist-retry"
    with holding(
        http, "warehouse", lambda: post(http, "/warehouse/picklists", body, first_key)
    ) as held:
        busy = post(http, "/warehouse/picklists", body, retry_key)
        assert error_of(busy) == resource_in_use("order", order_id)
        other = post(http, "/warehouse/picklists", picklist(f"{order_id}-b", "SKU-FREE"))
        assert other.status_code == 200  # only this order is locked
        http.post("/admin/faults/warehouse/release")
        first = held.result(timeout=10).json()
    assert post(http, "/warehouse/picklists", body, retry_key).json() == first
    assert listing(http, "/warehouse/picklists", order_id=order_id) == [first]


def order_closed(order_id: str, closed: str) -> tuple[int, str, str, str]:
    message = (
        f"Order '{order_id}' was cancelled at the warehouse ({closed}); "
        "a cancelled order takes no new picklist."
    )
    return 422, "invalid_request", "order_closed", message


def test_cancelling_an_order_takes_back_its_picklist_and_closes_it(
    http: httpx.Client, order_id: str
) -> None:
    sku = f"SKU-{order_id}"
    http.put(f"/warehouse/stock/{sku}", json={"on_hand": 5})
    created = post(http, "/warehouse/picklists", picklist(order_id, sku, 2)).json()
    assert stock_of(http, sku) == 3
    cancel, cancel_key = f"/warehouse/orders/{order_id}/cancel", f"{order_id}:picklist-cancel"

    first = post(http, cancel, key=cancel_key)

    assert first.status_code == 200
    closed = first.json()
    assert closed == {
        "object": "order",
        "order_id": order_id,
        "status": "closed",
        "closed": closed["closed"],
        "picklist": created | {"status": "cancelled"},
    }
    assert stock_of(http, sku) == 5
    # A picklist request that arrives now, under a key never used, is refused and stored.
    late_key = f"{order_id}:picklist-late"
    late = post(http, "/warehouse/picklists", picklist(order_id, sku, 2), late_key)
    assert error_of(late) == order_closed(order_id, closed["closed"])
    assert late.json()["error"]["order_id"] == order_id
    replay = post(http, "/warehouse/picklists", picklist(order_id, sku, 2), late_key)
    assert (replay.content, replay.headers["idempotent-replayed"]) == (late.content, "true")
    # Cancelling again, under the same key or a new one, changes nothing.
    again = post(http, cancel, key=cancel_key)
    assert (again.content, again.headers["idempotent-replayed"]) == (first.content, "true")
    assert post(http, cancel).json() == closed
    assert stock_of(http, sku) == 5
    assert listing(http, "/warehouse/picklists", order_id=order_id) == [closed["picklist"]]


def test_cancelling_an_order_with_no_picklist_closes_it(http: httpx.Client, order_id: str) -> None:
    sku = f"SKU-{order_id}"
    http.put(f"/warehouse/stock/{sku}", json={"on_hand": 5})
    closed = post(http, f"/warehouse/orders/{order_id}/cancel").json()
    assert (closed["order_id"], closed["status"], closed["picklist"]) == (order_id, "closed", None)
    late = post(http, "/warehouse/picklists", picklist(order_id, sku, 2))
    assert error_of(late) == order_closed(order_id, closed["closed"])
    assert stock_of(http, sku) == 5  # nothing reserved, not even for a moment
    assert count(http, "/warehouse/picklists", order_id=order_id) == 0
    other = post(http, "/warehouse/picklists", picklist(f"{order_id}-b", sku, 2))
    assert other.status_code == 200  # only that order is closed


def test_an_order_cancel_while_its_picklist_is_being_made_is_409(
    http: httpx.Client, order_id: str
) -> None:
    sku = f"SKU-{order_id}"
    http.put(f"/warehouse/stock/{sku}", json={"on_hand": 5})
    cancel, cancel_key = f"/warehouse/orders/{order_id}/cancel", f"{order_id}:picklist-cancel"
    body = picklist(order_id, sku, 2)
    with holding(
        http, "warehouse", lambda: post(http, "/warehouse/picklists", body, f"{order_id}:picklist")
    ) as held:
        busy = post(http, cancel, key=cancel_key)
        assert error_of(busy) == resource_in_use("order", order_id)
        http.post("/admin/faults/warehouse/release")
        created = held.result(timeout=10).json()
    assert stock_of(http, sku) == 3
    retried = post(http, cancel, key=cancel_key)
    assert "idempotent-replayed" not in retried.headers  # the 409 was not stored under its key
    assert retried.json()["picklist"] == created | {"status": "cancelled"}
    assert stock_of(http, sku) == 5


def test_a_picklist_request_arriving_after_its_order_was_cancelled_picks_nothing(
    http: httpx.Client, order_id: str
) -> None:
    """The request is on its way (delayed before its claim) when the order is cancelled: the
    cancel cannot see it, but the closed order refuses it when it arrives."""
    sku = f"SKU-{order_id}"
    http.put(f"/warehouse/stock/{sku}", json={"on_hand": 5})
    key = f"{order_id}:picklist"
    http.put("/admin/faults/warehouse", json={"delay_next": 1, "key_prefix": key})
    with ThreadPoolExecutor(1) as pool:
        on_its_way = pool.submit(post, http, "/warehouse/picklists", picklist(order_id, sku), key)
        try:
            wait_delayed(http, "warehouse", key)
            closed = post(http, f"/warehouse/orders/{order_id}/cancel").json()
        finally:
            http.post("/admin/faults/warehouse/deliver")
        arrived = on_its_way.result(timeout=10)
    assert closed["picklist"] is None  # nothing was picked when the order was cancelled
    assert error_of(arrived) == order_closed(order_id, closed["closed"])
    assert (count(http, "/warehouse/picklists", order_id=order_id), stock_of(http, sku)) == (0, 5)


def test_two_orders_race_for_the_last_unit(http: httpx.Client, order_id: str) -> None:
    sku = f"SKU-{order_id}"
    http.put(f"/warehouse/stock/{sku}", json={"on_hand": 1})
    orders = [f"{order_id}-a", f"{order_id}-b"]
    responses = held_then_released(
        http,
        "warehouse",
        *(lambda o=o: post(http, "/warehouse/picklists", picklist(o, sku)) for o in orders),
    )
    assert sorted(response.status_code for response in responses) == [200, 422]
    assert sum(count(http, "/warehouse/picklists", order_id=o) for o in orders) == 1
    assert http.get("/warehouse/stock").json()["data"].count({"sku": sku, "on_hand": 0}) == 1


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [("fail_next", 503, "injected_fault"), ("reject_next", 422, "injected_rejection")],
)
def test_injected_failure_is_not_stored_and_the_same_key_succeeds_once(
    http: httpx.Client, order_id: str, fault: str, status: int, code: str
) -> None:
    http.put("/admin/faults/mail", json={fault: 1})
    key = f"{order_id}-mail"
    failed = post(http, "/mail/messages", message(order_id), key=key)
    assert failed.status_code == status
    assert failed.json()["error"]["code"] == code
    assert count(http, "/mail/messages", order_id=order_id) == 0
    retried = post(http, "/mail/messages", message(order_id), key=key)
    assert retried.status_code == 200
    assert "idempotent-replayed" not in retried.headers  # the failure was not stored
    assert count(http, "/mail/messages", order_id=order_id) == 1


def test_refuse_next_is_stored_under_its_key(http: httpx.Client, order_id: str) -> None:
    intent_id = intent(http, order_id)["id"]
    confirm = f"/v1/payment_intents/{intent_id}/confirm"
    http.put("/admin/faults/payments", json={"refuse_next": 1})
    key = f"{order_id}:payment-confirm"
    refused = form(http, confirm, key=key)
    assert error_of(refused) == (
        400,
        "invalid_request_error",
        "injected_refusal",
        "Injected refusal: payments refused this request; the refusal is stored under its key.",
    )
    replay = form(http, confirm, key=key)
    assert (replay.content, replay.headers["idempotent-replayed"]) == (refused.content, "true")
    assert http.get("/admin/faults").json()["payments"]["refuse_next"] == 0
    assert count(http, "/payments/charges", order_id=order_id) == 0
    [stored] = listing(http, "/payments/intents", order_id=order_id)
    assert (stored["status"], stored["latest_charge"]) == ("requires_confirmation", None)
    charged = form(http, confirm, key=f"{order_id}:payment-confirm-again")
    assert charged.status_code == 200  # a new key goes through
    [charge] = listing(http, "/payments/charges", order_id=order_id)
    assert charge["id"] == charged.json()["latest_charge"]


def test_key_prefix_targets_one_order(http: httpx.Client, order_id: str) -> None:
    other = f"{order_id}-other"

    def send(order: str, step: str) -> int:
        return post(http, "/mail/messages", message(order), key=f"{order}:{step}").status_code

    http.put("/admin/faults/mail", json={"fail_next": 1, "key_prefix": f"{order_id}:"})
    assert send(other, "confirmation-email") == 200
    assert send(order_id, "confirmation-email") == 503
    # With a suffix too, a key must match both.
    http.put("/admin/faults/mail", json={"fail_next": 1, "key_suffix": ":shipped-email"})
    assert send(other, "shipped-email") == 200
    assert send(order_id, "cancelled-email") == 200
    assert send(order_id, "shipped-email") == 503
    assert http.get("/admin/faults").json()["mail"]["fail_next"] == 0
    assert count(http, "/mail/messages", order_id=order_id) == 1
    assert count(http, "/mail/messages", order_id=other) == 2


def test_faults_only_hit_their_service(http: httpx.Client, order_id: str) -> None:
    http.put("/admin/faults/payments", json={"error_rate": 1.0})
    assert post(http, "/mail/messages", message(order_id)).status_code == 200
    created = form(http, "/v1/payment_intents", intent_params(order_id, "pm_x"))
    assert stripe_error(created) == (503, "api_error", "injected_fault")
    assert http.get("/payments/intents").status_code == 200  # GETs are never faulted
    assert http.get("/v1/refunds").status_code == 200


def test_drop_next_commits_but_the_caller_never_hears(http: httpx.Client, order_id: str) -> None:
    http.put("/admin/faults/payments", json={"drop_next": 1})
    body = intent_params(order_id, "pm_ok", amount=700)
    with pytest.raises(httpx.RemoteProtocolError):
        form(http, "/v1/payment_intents", body, key=f"{order_id}-intent")
    [committed] = listing(http, "/payments/intents", order_id=order_id)
    retry = form(http, "/v1/payment_intents", body, key=f"{order_id}-intent")
    assert retry.status_code == 200
    assert retry.headers["idempotent-replayed"] == "true"
    assert retry.json() == committed
    assert count(http, "/payments/intents", order_id=order_id) == 1


def test_release_as_failure_commits_nothing(http: httpx.Client, order_id: str) -> None:
    key = f"{order_id}-mail"
    with holding(
        http, "mail", lambda: post(http, "/mail/messages", message(order_id), key)
    ) as held:
        assert http.get("/admin/held/keys").json() == {
            "payments": [],
            "mail": [key],
            "warehouse": [],
        }
        assert http.post("/admin/faults/mail/release?fail=true").json() == {"released": 1}
        failed = held.result(timeout=10)
    assert failed.status_code == 503
    assert failed.json()["error"]["code"] == "injected_fault"
    assert count(http, "/mail/messages", order_id=order_id) == 0
    retried = post(http, "/mail/messages", message(order_id), key=key)
    assert retried.status_code == 200
    assert "idempotent-replayed" not in retried.headers  # the key was freed, not stored
    assert count(http, "/mail/messages", order_id=order_id) == 1


def test_key_suffix_targets_one_step(http: httpx.Client, order_id: str) -> None:
    http.put("/admin/faults/mail", json={"fail_next": 1, "key_suffix": ":shipped-email"})
    other = post(http, "/mail/messages", message(order_id), key=f"{order_id}:confirmation-email")
    assert other.status_code == 200
    body = message(order_id) | {"template": "order-shipped"}
    target = post(http, "/mail/messages", body, key=f"{order_id}:shipped-email")
    assert target.status_code == 503
    assert http.get("/admin/faults").json()["mail"]["fail_next"] == 0


def test_drop_replays_loses_the_retries_answers_too(http: httpx.Client, order_id: str) -> None:
    http.put("/admin/faults/mail", json={"drop_next": 3, "drop_replays": True})
    key = f"{order_id}-mail"
    for _ in range(3):  # the first answer and two replays are lost on the way back
        with pytest.raises(httpx.RemoteProtocolError):
            post(http, "/mail/messages", message(order_id), key=key)
    replay = post(http, "/mail/messages", message(order_id), key=key)
    assert replay.status_code == 200
    assert replay.headers["idempotent-replayed"] == "true"
    assert count(http, "/mail/messages", order_id=order_id) == 1


def test_path_prefix_targets_one_endpoint(http: httpx.Client, order_id: str) -> None:
    http.put("/admin/faults/payments", json={"fail_next": 1, "path_prefix": "/v1/refunds"})
    intent_id = intent(http, order_id)["id"]  # not under the prefix: no fault
    assert form(http, f"/v1/payment_intents/{intent_id}/confirm").status_code == 200
    refund = form(http, "/v1/refunds", {"payment_intent": intent_id})
    assert error_of(refund)[:3] == (503, "api_error", "injected_fault")
    assert http.get("/admin/faults").json()["payments"]["fail_next"] == 0


def test_a_delayed_request_is_invisible_until_delivered(http: httpx.Client, order_id: str) -> None:
    """``delay_next`` stops a request before it claims its key, like one still on its way:
    its key and its order are free, so another request on the order is not refused; delivered,
    it is handled as if it had just arrived."""
    late_key, other_key = f"{order_id}:picklist", f"{order_id}:picklist-retry"
    body = picklist(order_id, "SKU-FREE")
    faults = {"delay_next": 1, "key_prefix": late_key, "path_prefix": "/warehouse/picklists"}
    http.put("/admin/faults/warehouse", json=faults)
    with ThreadPoolExecutor(1) as pool:
        late = pool.submit(post, http, "/warehouse/picklists", body, late_key)
        try:
            wait_delayed(http, "warehouse", late_key)
            assert stored_under(http, late_key) == []
            # Held, the request would lock its order (409); delayed, the provider cannot know.
            other = post(http, "/warehouse/picklists", body, other_key)
            assert other.status_code == 200
            assert http.get("/admin/held").json()["warehouse"] == 0
        finally:
            delivered = http.post("/admin/faults/warehouse/deliver").json()
        assert delivered == {"delivered": 1}
        arrived = late.result(timeout=10)
    assert arrived.json() == other.json()  # the order's one picklist, found on arrival
    assert "idempotent-replayed" not in arrived.headers
    [stored] = stored_under(http, late_key)
    assert (stored["state"], stored["status"], stored["body"]) == ("done", 200, other.json())
    assert http.get("/admin/delayed/keys").json() == {"payments": [], "mail": [], "warehouse": []}
    assert http.get("/admin/faults").json()["warehouse"]["delay_next"] == 0


def test_latency(http: httpx.Client, order_id: str) -> None:
    http.put("/admin/faults/mail", json={"latency_ms": 300})
    started = time.monotonic()
    assert post(http, "/mail/messages", message(order_id)).status_code == 200
    assert time.monotonic() - started >= 0.3


def test_fault_admin_api(http: httpx.Client) -> None:
    http.put("/admin/faults/mail", json={"error_rate": 0.5})
    state = http.put("/admin/faults/mail", json={"latency_ms": 5}).json()
    assert state["error_rate"] == 0.5 and state["latency_ms"] == 5  # unset fields are kept
    assert http.get("/admin/faults").json()["mail"] == state
    assert http.put("/admin/faults/mail", json={"error_rate": 2}).status_code == 422
    assert http.put("/admin/faults/nope", json={}).status_code == 404
    http.put("/admin/faults/mail", json={"key_suffix": ":x", "drop_replays": True})
    reset = http.delete("/admin/faults").json()
    assert set(reset) == {"payments", "mail", "warehouse"}
    assert all(not value for faults in reset.values() for value in faults.values())
    assert http.get("/admin/held").json() == {"payments": 0, "mail": 0, "warehouse": 0}
    assert http.get("/admin/delayed/keys").json() == {"payments": [], "mail": [], "warehouse": []}


def test_fired_faults_are_counted_per_key_at_the_provider(
    provider: Provider, http: httpx.Client, order_id: str
) -> None:
    key = f"{order_id}:email"
    http.put("/admin/faults/mail", json={"fail_next": 1, "drop_next": 1, "key_prefix": key})
    admin = SandboxAdmin(provider.url, API_KEY)
    try:
        assert admin.unfired("mail") == {"fail_next": 1, "drop_next": 1}
        assert post(http, "/mail/messages", message(order_id), key=f"{order_id}:other").is_success
        assert admin.fired("mail", order_id) == {}  # the prefix did not match: nothing fired
        assert post(http, "/mail/messages", message(order_id), key=key).status_code == 503
        with pytest.raises(httpx.TransportError):
            post(http, "/mail/messages", message(order_id), key=key)  # committed, then dropped
        assert admin.fired("mail", order_id) == {"fail": 1, "drop": 1}
        assert admin.unfired("mail") == {}
        http.delete("/admin/faults")
        assert admin.fired("mail", key) == {"fail": 1, "drop": 1}  # a log: kept across resets
        assert admin.fired("payments", order_id) == {}
    finally:
        admin.close()


def test_ledger_summary(provider: Provider, http: httpx.Client, order_id: str) -> None:
    intent_id = intent(http, order_id)["id"]
    form(http, f"/v1/payment_intents/{intent_id}/confirm")
    refund = form(http, "/v1/refunds", {"payment_intent": intent_id, "amount": 1000}).json()
    cancelled = intent(http, order_id)["id"]
    form(http, f"/v1/payment_intents/{cancelled}/cancel")
    released = intent(http, order_id, capture_method="manual")["id"]
    form(http, f"/v1/payment_intents/{released}/confirm")
    form(http, f"/v1/payment_intents/{released}/cancel")
    post(http, "/mail/messages", message(order_id))
    post(http, "/mail/messages", message(order_id) | {"template": "order-cancelled"})
    picked = post(http, "/warehouse/picklists", picklist(order_id, "SKU-FREE")).json()
    post(http, f"/warehouse/picklists/{picked['id']}/cancel")
    charges = [http.get(f"/v1/payment_intents/{pi}").json() for pi in (intent_id, released)]
    summary = http.get("/admin/ledger", params={"order_id": order_id}).json()
    assert summary == {
        "orders": {
            order_id: {
                "payment_intents": 3,
                "cancelled_intents": 2,
                "authorizations": 2,
                "authorized_amount": 5000,
                "charges": 1,
                "charged_amount": 2500,
                "released": 1,
                "released_amount": 2500,
                "refunds": 1,
                "refunded_amount": 1000,
                "refunds_by_status": {"succeeded": 1},
                "refunded_by_status": {"succeeded": 1000},
                "emails": {"order-confirmation": 1, "order-cancelled": 1},
                "picklists": 1,
                "cancelled_picklists": 1,
                "disputes": 0,
                "failed_events": 0,
                "ids": {
                    "payment_intent": [intent_id, cancelled, released],
                    "charge": [charge["latest_charge"] for charge in charges],
                    "refund": [refund["id"]],
                    "picklist": [picked["id"]],
                },
                "currencies": ["eur"],
            }
        }
    }
    assert order_id in http.get("/admin/ledger").json()["orders"]
    admin = SandboxAdmin(provider.url, API_KEY)
    try:
        effects = admin.effects(order_id)
    finally:
        admin.close()
    assert (effects.cancelled_intents, effects.charged_amount, effects.refunded_amount) == (
        2,
        2500,
        1000,
    )
    assert (effects.authorizations, effects.released, effects.released_amount) == (2, 1, 2500)
    assert (effects.returned, effects.returned_amount) == (1, 1000)


def test_rows_without_an_order_id_are_summed_apart(provider: Provider, http: httpx.Client) -> None:
    params = intent_params("unused")
    del params["metadata"]
    stray = form(http, "/v1/payment_intents", params).json()["id"]
    form(http, f"/v1/payment_intents/{stray}/confirm")
    admin = SandboxAdmin(provider.url, API_KEY)
    try:
        ledger = admin.ledger()
    finally:
        admin.close()
    assert "" not in ledger.orders
    assert stray in ledger.unattributed.ids_of("payment_intent")
    assert ledger.unattributed.charges >= 1 and ledger.unattributed.charged_amount >= 2500


def test_html_pages(provider: Provider, http: httpx.Client, order_id: str) -> None:
    post(http, "/mail/messages", message(order_id, subject="<script>alert(1)</script>"))
    post(http, f"/warehouse/orders/{order_id}/cancel")
    for path in ("/", "/payments/", "/mail/", "/warehouse/"):
        page = httpx.get(f"{provider.url}{path}", params={"api_key": API_KEY})
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert f'href="/mail/?api_key={API_KEY}"' in page.text
    payments = http.get("/payments/").text
    sections = ("Captures", "Authorizations", "Releases", "Refunds", "Declined", "Payment intents")
    for section in sections:
        assert f"<h2>{section}" in payments
    mail = http.get("/mail/").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in mail and "<script>" not in mail
    warehouse = http.get("/warehouse/").text
    assert "Cancelled orders" in warehouse and f"<td>{order_id}</td>" in warehouse


def test_sigkill_and_restart_keeps_the_ledger(tmp_path: Path, order_id: str) -> None:
    server = Provider(tmp_path / "ledger.sqlite3")
    server.start()
    try:
        with _client(server) as http:
            intent_id = intent(http, order_id)["id"]
            confirm = f"/v1/payment_intents/{intent_id}/confirm"
            charged = form(http, confirm, key=f"{order_id}-confirm")
            # Leave a key in flight when the process dies: its effect never committed.
            http.put("/admin/faults/mail", json={"hold_next": 1})
            with ThreadPoolExecutor(1) as pool:
                pending = pool.submit(
                    post, http, "/mail/messages", message(order_id), f"{order_id}-held"
                )
                wait_held(http, "mail", 1)
                server.kill()
                with pytest.raises(httpx.TransportError):
                    pending.result(timeout=10)
        server.start()
        with _client(server) as http:
            replay = form(http, confirm, key=f"{order_id}-confirm")
            assert replay.content == charged.content
            assert replay.headers["idempotent-replayed"] == "true"
            retried = post(http, "/mail/messages", message(order_id), key=f"{order_id}-held")
            assert retried.status_code == 200  # the stale claim was released at startup
            summary = http.get("/admin/ledger", params={"order_id": order_id}).json()
            counts = summary["orders"][order_id]
            assert (counts["payment_intents"], counts["charges"], counts["emails"]) == (
                1,
                1,
                {"order-confirmation": 1},
            )
    finally:
        server.kill()


# The tables that have gained columns since, as ledgers written before then hold them.
OLD_SCHEMA = """
CREATE TABLE idempotency_keys (
    key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('in_flight', 'done')),
    status_code INTEGER, body TEXT, created_at REAL NOT NULL
);
CREATE TABLE payment_intents (
    id TEXT PRIMARY KEY, order_id TEXT NOT NULL, amount INTEGER NOT NULL, currency TEXT NOT NULL,
    payment_method TEXT NOT NULL, status TEXT NOT NULL, decline_code TEXT, created TEXT NOT NULL
);
CREATE TABLE charges (
    id TEXT PRIMARY KEY, payment_intent TEXT NOT NULL UNIQUE REFERENCES payment_intents (id),
    order_id TEXT NOT NULL, amount INTEGER NOT NULL, currency TEXT NOT NULL,
    status TEXT NOT NULL, created TEXT NOT NULL
);
CREATE TABLE refunds (
    id TEXT PRIMARY KEY, charge TEXT NOT NULL REFERENCES charges (id), order_id TEXT NOT NULL,
    amount INTEGER NOT NULL, reason TEXT, status TEXT NOT NULL, created TEXT NOT NULL
);
"""


def test_a_ledger_from_before_the_new_columns_opens_and_works(
    tmp_path: Path, order_id: str
) -> None:
    path = tmp_path / "old.sqlite3"
    created = "2025-01-01T00:00:00.000+00:00"
    with sqlite3.connect(path) as old:
        old.executescript(OLD_SCHEMA)
        old.execute(
            "INSERT INTO payment_intents VALUES (?, ?, 2500, 'EUR', 'pm_card_visa', 'succeeded',"
            " NULL, ?)",
            ("pi_old", order_id, created),
        )
        old.execute(
            "INSERT INTO charges VALUES ('ch_old', 'pi_old', ?, 2500, 'EUR', 'succeeded', ?)",
            (order_id, created),
        )
        # A refunded order and a declined one, as the JSON gateway left them.
        old.executescript(f"""
            INSERT INTO payment_intents VALUES ('pi_paid', '{order_id}', 700, 'USD',
                'pm_card_visa', 'succeeded', NULL, '{created}');
            INSERT INTO charges VALUES ('ch_paid', 'pi_paid', '{order_id}', 700, 'USD',
                'refunded', '{created}');
            INSERT INTO refunds VALUES ('re_old', 'ch_paid', '{order_id}', 700, 'cancelled',
                'succeeded', '{created}');
            INSERT INTO payment_intents VALUES ('pi_declined', '{order_id}', 900, 'USD',
                'pm_card_declined', 'failed', 'generic_decline', '{created}');
        """)
    old.close()
    server = Provider(path)
    server.start()
    try:
        with _client(server) as http:
            stored = {i["id"]: i for i in listing(http, "/payments/intents", order_id=order_id)}
            old_intent = stored["pi_old"]  # backfilled
            assert (old_intent["status"], old_intent["latest_charge"]) == ("succeeded", "ch_old")
            assert (old_intent["capture_method"], old_intent["amount_received"]) == (
                "automatic",
                2500,
            )
            assert old_intent["metadata"] == {"order_id": order_id}
            assert old_intent["currency"] == "eur" and isinstance(old_intent["created"], int)
            declined = stored["pi_declined"]
            assert declined["status"] == "requires_payment_method"
            assert declined["last_payment_error"]["decline_code"] == "generic_decline"
            charges = {c["id"]: c for c in listing(http, "/payments/charges", order_id=order_id)}
            assert (charges["ch_old"]["captured"], charges["ch_old"]["refunded"]) == (True, False)
            assert (charges["ch_paid"]["status"], charges["ch_paid"]["refunded"]) == (
                "succeeded",
                True,
            )
            [refund] = listing(http, "/payments/refunds", order_id=order_id)
            assert (refund["payment_intent"], refund["currency"]) == ("pi_paid", "usd")
            confirm_old = form(http, "/v1/payment_intents/pi_old/confirm")
            assert stripe_error(confirm_old) == UNEXPECTED_STATE
            again = form(http, "/v1/refunds", {"payment_intent": "pi_paid"})
            assert stripe_error(again)[2] == "charge_already_refunded"
            refunded = form(http, "/v1/refunds", {"payment_intent": "pi_old", "amount": 500})
            assert refunded.json()["amount"] == 500
            cancelled = form(http, f"/v1/payment_intents/{intent(http, order_id)['id']}/cancel")
            assert cancelled.json()["status"] == "canceled"
            assert count(http, "/payments/charges", order_id=order_id) == 2
            summary = http.get("/admin/ledger", params={"order_id": order_id}).json()
            counts = summary["orders"][order_id]
            assert (counts["charges"], counts["charged_amount"], counts["refunded_amount"]) == (
                2,
                3200,
                1200,
            )
            # A table added since: created when the old ledger opened.
            closed = post(http, f"/warehouse/orders/{order_id}/cancel")
            assert (closed.status_code, closed.json()["status"]) == (200, "closed")
    finally:
        server.kill()
    with sqlite3.connect(path) as reopened:
        columns = {
            table: {row[1] for row in reopened.execute(f"PRAGMA table_info({table})")}
            for table in ("idempotency_keys", "payment_intents")
        }
        indexes = {row[1] for row in reopened.execute("PRAGMA index_list(idempotency_keys)")}
    reopened.close()
    assert "resource" in columns["idempotency_keys"] and "charge" in columns["payment_intents"]
    assert "idempotency_keys_resource" in indexes


# --- Every malformed request gets a clear 4xx in the error shape, never a 500 ---------------

EFFECT_POSTS = {
    "/v1/payment_intents",
    "/v1/payment_intents/{intent}/confirm",
    "/v1/payment_intents/{intent}/capture",
    "/v1/payment_intents/{intent}/cancel",
    "/v1/refunds",
    "/mail/messages",
    "/warehouse/picklists",
    "/warehouse/picklists/{picklist_id}/cancel",
    "/warehouse/picklists/{picklist_id}/release",
    "/warehouse/picklists/{picklist_id}/ship",
    "/warehouse/orders/{order_id}/cancel",
}


def test_openapi_declares_the_idempotency_key_on_every_post_with_an_effect(
    http: httpx.Client,
) -> None:
    paths = http.get("/openapi.json").json()["paths"]
    posts = {path for path, operations in paths.items() if "post" in operations}
    admin = {
        "/admin/keys/expire",
        "/admin/faults/{service}/release",
        "/admin/faults/{service}/deliver",
        "/admin/webhooks/events/{event_id}/send",
        "/admin/stripe-events/events/{event_id}/send",
        "/admin/disputes",
        "/admin/disputes/{dispute}/close",
    }
    resend = "/resend/emails"
    assert posts - admin - {resend} == EFFECT_POSTS
    for path in EFFECT_POSTS:
        [header] = [p for p in paths[path]["post"]["parameters"] if p["in"] == "header"]
        assert header["name"] == "Idempotency-Key" and header["required"] is True
        assert header["schema"]["maxLength"] == 255 and header["schema"]["minLength"] == 1
    # Resend's key is optional (providers.resend): declared, not required.
    [header] = [p for p in paths[resend]["post"]["parameters"] if p["in"] == "header"]
    assert header["name"] == "Idempotency-Key" and not header.get("required")


def bad_request(response: httpx.Response, status: int, code: str) -> str:
    """Assert the error shape, status and code; return the message."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["type"] and error["message"]
    message: str = error["message"]
    return message


def test_idempotency_key_is_at_most_255_printable_characters(
    http: httpx.Client, order_id: str
) -> None:
    assert post(http, "/mail/messages", message(order_id), key="k" * 255).status_code == 200
    too_long = post(http, "/mail/messages", message(order_id), key="k" * 3000)
    text = bad_request(too_long, 400, "idempotency_key_invalid")
    assert "must be 1 to 255 printable ASCII characters; this one has 3000 characters" in text
    assert "k" * 20 not in text  # never echoed
    latin1 = http.post(
        "/mail/messages", json=message(order_id), headers={b"Idempotency-Key": b"caf\xe9"}
    )
    assert "not all of them printable ASCII" in bad_request(latin1, 400, "idempotency_key_invalid")
    empty = http.post("/mail/messages", json=message(order_id), headers={"Idempotency-Key": ""})
    bad_request(empty, 400, "idempotency_key_missing")
    assert count(http, "/mail/messages", order_id=order_id) == 1


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/mail/messages", {"to": f"{'a' * 250}@example.com"}, "body.to"),
        ("/warehouse/picklists", {"items": [{"sku": "S", "quantity": 10_001}]}, "body.items.0"),
    ],
)  # fmt: skip
def test_amounts_ids_and_sizes_are_bounded(
    http: httpx.Client, order_id: str, path: str, body: dict[str, Any], field: str
) -> None:
    defaults: dict[str, dict[str, Any]] = {
        "/mail/messages": message(order_id),
        "/warehouse/picklists": picklist(order_id, "S"),
    }  # fmt: skip
    response = post(http, path, {**defaults.get(path, {}), **body})
    text = bad_request(response, 422, "validation_error")
    assert f"Invalid request: {field}" in text
    assert str(2**63) not in text  # the input is not echoed


@pytest.mark.parametrize(
    ("path", "params", "code", "param"),
    [
        ("/v1/payment_intents", {"amount": 2**63}, "parameter_invalid_integer", "amount"),
        ("/v1/payment_intents", {"amount": 100_000_000}, "amount_too_large", "amount"),
        ("/v1/payment_intents", {"amount": 0}, "amount_too_small", "amount"),
        ("/v1/payment_intents", {"amount": "1.5"}, "parameter_invalid_integer", "amount"),
        ("/v1/payment_intents", {"currency": "euro"}, "parameter_invalid_string", "currency"),
        ("/v1/payment_intents", {"capture_method": "later"}, "parameter_invalid_string",
         "capture_method"),
        ("/v1/payment_intents", {"metadata": {"order_id": "o" * 501}},
         "parameter_invalid_string", "metadata[order_id]"),
        ("/v1/payment_intents", {"shipping": {"name": "Ada"}}, "parameter_unknown",
         "shipping[name]"),
        ("/v1/refunds", {"charge": "ch_x", "amount": 2**64}, "parameter_invalid_integer",
         "amount"),
        ("/v1/refunds", {"amount": 100}, "parameter_missing", "payment_intent"),
        ("/v1/refunds", {"charge": "ch_x", "reason": "changed my mind"},
         "parameter_invalid_string", "reason"),
        ("/v1/payment_intents/pi_x/cancel", {"cancellation_reason": "bored"},
         "parameter_invalid_string", "cancellation_reason"),
        ("/v1/payment_intents/pi_x/capture", {"amount_to_capture": -1}, "amount_too_small",
         "amount_to_capture"),
    ],
)  # fmt: skip
def test_stripe_parameters_are_bounded_and_nothing_is_stored(
    http: httpx.Client, order_id: str, path: str, params: dict[str, Any], code: str, param: str
) -> None:
    defaults = intent_params(order_id) if path == "/v1/payment_intents" else {}
    key = f"{order_id}:bounded"
    response = form(http, path, {**defaults, **params}, key=key)
    assert stripe_error(response) == (400, "invalid_request_error", code), response.text
    assert response.json()["error"]["param"] == param
    assert str(2**63) not in response.text  # the input is not echoed
    assert stored_under(http, key) == []  # Stripe stores no result for a validation failure
    assert count(http, "/payments/intents", order_id=order_id) == 0


def test_an_intent_at_the_amount_limits_is_accepted(http: httpx.Client, order_id: str) -> None:
    for amount in (MINIMUM_CHARGE["EUR"], 99_999_999):
        created = form(http, "/v1/payment_intents", intent_params(order_id, amount=amount))
        assert created.json()["amount"] == amount


def test_listing_filters_and_stock_are_bounded(http: httpx.Client) -> None:
    listing_response = http.get("/payments/charges", params={"order_id": "o" * 201})
    assert "query.order_id" in bad_request(listing_response, 422, "validation_error")
    stock = http.put("/warehouse/stock/SKU-BIG", json={"on_hand": 2**63})
    assert "body.on_hand" in bad_request(stock, 422, "validation_error")
    latency = http.put("/admin/faults/mail", json={"latency_ms": 10**30})
    assert "body.latency_ms" in bad_request(latency, 422, "validation_error")


def test_a_body_over_one_megabyte_is_413(http: httpx.Client, order_id: str) -> None:
    huge = message(order_id) | {"body": "x" * 1_000_001}
    bad_request(post(http, "/mail/messages", huge), 413, "request_too_large")

    def chunked() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        yield b'{"body": "'
        for _ in range(11):
            yield b"x" * 100_000
        yield b'"}'

    streamed = http.post(
        "/mail/messages",
        content=chunked(),
        headers={"Idempotency-Key": str(uuid.uuid4()), "content-type": "application/json"},
    )
    bad_request(streamed, 413, "request_too_large")
    assert count(http, "/mail/messages", order_id=order_id) == 0
    stripe_huge = form(http, "/v1/payment_intents", {"description": "x" * 1_000_001})
    assert stripe_error(stripe_huge) == (413, "invalid_request_error", "request_too_large")


def test_metrics_count_the_stripe_api_as_payments(http: httpx.Client, order_id: str) -> None:
    def payments(status: str) -> float:
        wanted = ('service="payments"', f'status="{status}"', 'method="POST"')
        for line in http.get("/metrics").text.splitlines():
            if line.startswith("providers_requests_total{") and all(w in line for w in wanted):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def conflicts() -> float:
        for line in http.get("/metrics").text.splitlines():
            if line.startswith('providers_conflicts_total{service="payments"}'):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before, conflicts_before = payments("200"), conflicts()
    intent_id = intent(http, order_id)["id"]
    confirm, cancel = (f"/v1/payment_intents/{intent_id}/{verb}" for verb in ("confirm", "cancel"))
    with holding(http, "payments", lambda: form(http, confirm)):
        assert stripe_error(form(http, cancel)) == LOCK_TIMEOUT
    assert payments("200") >= before + 2  # the create and the held confirm
    assert conflicts() == conflicts_before + 1  # the lock_timeout counts as a conflict


@pytest.mark.parametrize(
    "content", [b'{"order_id": "\xff\xfe"}', b"[" * 100_000, b'{"amount": 1' + b"0" * 5000 + b"}"]
)
def test_an_unreadable_body_is_400_or_422(http: httpx.Client, content: bytes) -> None:
    response = http.post(
        "/warehouse/picklists",
        content=content,
        headers={"Idempotency-Key": str(uuid.uuid4()), "content-type": "application/json"},
    )
    assert response.status_code in (400, 422), response.text
    assert response.json()["error"]["code"] in ("invalid_body", "validation_error")


@pytest.mark.parametrize(
    "content",
    [b"amount=\xff\xfe", b"[" * 100_000, b"a[b=1", b"a=1&a[b]=2", b"x=1&" * 1001],
)
def test_an_unreadable_form_is_a_stripe_400(http: httpx.Client, content: bytes) -> None:
    response = http.post(
        "/v1/payment_intents",
        content=content,
        headers={
            "Idempotency-Key": str(uuid.uuid4()),
            "content-type": "application/x-www-form-urlencoded",
        },
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_a_body_nested_too_deep_for_an_endpoint_without_one_is_no_500(
    http: httpx.Client,
) -> None:
    """The body is never validated there, but the idempotency fingerprint still reads it."""
    response = http.post(
        "/warehouse/picklists/pl_nope/cancel",
        content=b"[" * 100_000,
        headers={"Idempotency-Key": str(uuid.uuid4()), "content-type": "application/json"},
    )
    bad_request(response, 404, "resource_missing")


def test_a_card_number_sent_by_mistake_is_not_echoed(http: httpx.Client, order_id: str) -> None:
    card = "4242424242424242"
    response = form(http, "/v1/payment_intents", intent_params(order_id, card))
    assert stripe_error(response) == (400, "invalid_request_error", "parameter_invalid_string")
    assert response.json()["error"]["param"] == "payment_method"
    assert card not in response.text


# --- What Stripe does as time passes: authorizations expire, refunds settle --------------------


def test_an_authorization_expires_at_capture_before_and_is_released(
    http: httpx.Client, order_id: str
) -> None:
    http.put("/admin/faults/payments", json={"authorization_validity_s": 1})
    created = intent(http, order_id, capture_method="manual")
    confirmed = form(
        http, f"/v1/payment_intents/{created['id']}/confirm", {"expand[]": "latest_charge"}
    ).json()
    charge = confirmed["latest_charge"]
    capture_before = charge["payment_method_details"]["card"]["capture_before"]
    assert capture_before - time.time() <= 1.5
    assert confirmed["status"] == "requires_capture"

    time.sleep(max(0.0, capture_before - time.time()) + 0.5)
    expired = http.get(f"/v1/payment_intents/{created['id']}").json()
    assert (expired["status"], expired["cancellation_reason"]) == ("canceled", "automatic")
    assert expired["canceled_at"] == capture_before and expired["amount_capturable"] == 0
    late = form(http, f"/v1/payment_intents/{created['id']}/capture")
    assert stripe_error(late) == UNEXPECTED_STATE
    assert "status of canceled" in late.json()["error"]["message"]
    summary = http.get("/admin/ledger", params={"order_id": order_id}).json()["orders"][order_id]
    assert (summary["released"], summary["charges"], summary["cancelled_intents"]) == (1, 0, 1)


def test_the_clock_expires_an_authorization_nobody_asks_about(
    provider: Provider, http: httpx.Client, order_id: str
) -> None:
    http.put("/admin/faults/payments", json={"authorization_validity_s": 0.5})
    created = intent(http, order_id, capture_method="manual")
    form(http, f"/v1/payment_intents/{created['id']}/confirm")
    time.sleep(1.2)  # well past the window, and several ticks of the gateway's clock
    with sqlite3.connect(provider.db) as db:  # the ledger itself, not through any request
        status = db.execute(
            "SELECT status, cancellation_reason FROM payment_intents WHERE id = ?",
            (created["id"],),
        ).fetchone()
    assert status == ("canceled", "automatic")


def test_an_authorization_lasts_seven_days_by_default(http: httpx.Client, order_id: str) -> None:
    created = intent(http, order_id, capture_method="manual")
    form(http, f"/v1/payment_intents/{created['id']}/confirm")
    [charge] = listing(http, "/v1/charges", payment_intent=created["id"])
    left = charge["payment_method_details"]["card"]["capture_before"] - time.time()
    assert 7 * 86400 - 60 < left <= 7 * 86400


@pytest.mark.parametrize("outcome", ["succeeded", "failed"])
def test_a_refund_can_stay_pending_then_succeed_or_fail(
    http: httpx.Client, order_id: str, outcome: str
) -> None:
    faults: dict[str, Any] = {"refunds_pending_s": 0.5}
    if outcome == "failed":
        faults["refunds_fail_with"] = "expired_or_canceled_card"
    http.put("/admin/faults/payments", json=faults)
    charged = intent(http, order_id, confirm="true")
    refund = form(http, "/v1/refunds", {"payment_intent": charged["id"]}).json()
    assert refund["status"] == "pending" and "failure_reason" not in refund
    pending = http.get("/admin/ledger", params={"order_id": order_id}).json()["orders"][order_id]
    assert pending["refunds_by_status"] == {"pending": 1}

    time.sleep(0.8)
    settled = http.get(f"/v1/refunds/{refund['id']}").json()
    assert settled["status"] == outcome
    [charge] = listing(http, "/v1/charges", payment_intent=charged["id"])
    summary = http.get("/admin/ledger", params={"order_id": order_id}).json()["orders"][order_id]
    if outcome == "succeeded":
        assert charge["amount_refunded"] == 2500 and charge["refunded"] is True
        assert summary["refunded_by_status"] == {"succeeded": 2500}
        return
    assert settled["failure_reason"] == "expired_or_canceled_card"
    assert charge["amount_refunded"] == 0  # the money came back to the shop
    assert summary["refunds_by_status"] == {"failed": 1}
    http.delete("/admin/faults")
    again = form(http, "/v1/refunds", {"payment_intent": charged["id"]})
    assert again.status_code == 200 and again.json()["status"] == "succeeded"  # refundable again


def test_the_intent_list_reads_created_and_cursors_as_stripe_does_and_refuses_the_rest(
    http: httpx.Client, order_id: str
) -> None:
    made = intent(http, order_id)
    second = made["created"]

    def ids(**params: str) -> list[str]:
        found = listing(http, "/v1/payment_intents", limit="100", **params)
        return [item["id"] for item in found]

    assert made["id"] in ids(created=str(second))  # exactly that second
    assert made["id"] in ids(**{"created[gte]": str(second), "created[lte]": str(second)})
    assert made["id"] not in ids(**{"created[gt]": str(second)})
    assert made["id"] not in ids(**{"created[lt]": str(second)})
    last = "253402300799"  # the last second of year 9999: bounds at the end of time
    assert made["id"] in ids(**{"created[lte]": last})
    assert made["id"] not in ids(**{"created[gt]": last})
    for params, code, param in (
        ({"created[soon]": "1"}, "parameter_unknown", "created[soon]"),
        ({"created[gte]": "yesterday"}, "parameter_invalid_integer", "created[gte]"),
        ({"starting_after": "pi_unknown"}, "resource_missing", "starting_after"),
        ({"starting_after": made["id"], "ending_before": made["id"]}, "parameter_invalid", None),
        ({"limit": "101"}, "parameter_invalid_integer", "limit"),
    ):
        refused = http.get("/v1/payment_intents", params=params)
        assert stripe_error(refused) == (400, "invalid_request_error", code), params
        assert refused.json()["error"].get("param") == (param or "ending_before")
