"""Payment intents (``/v1/payment_intents``): create, confirm, capture, cancel, read, search.

Statuses, as Stripe's: ``requires_payment_method`` (none yet, or the last one was declined),
``requires_confirmation`` (created with a payment method), ``requires_capture`` (confirmed with
``capture_method=manual``: the card is authorized, no money moved, until its charge's
``payment_method_details.card.capture_before``: then the gateway cancels the intent itself,
``cancellation_reason`` ``automatic``, and releases the money), ``succeeded`` (captured),
``canceled``. A confirm with one of Stripe's 3-D Secure test cards (``cards.
AUTHENTICATION_REQUIRED``) leaves the intent in ``requires_action``, its ``next_action`` a
``redirect_to_url`` to the sandbox's authentication page (``authentication``), where the
customer completes 3-D Secure (the card is then authorized, or declined) or fails it (back to
``requires_payment_method``, ``last_payment_error.code`` ``payment_intent_authentication_failure``).
The sandbox never leaves an intent in ``processing``.

As on Stripe since API version 2023-08-16, an intent created without ``payment_method_types``
takes the account's automatic payment methods (``automatic_payment_methods``), some of which
redirect the customer: its confirm must then name a ``return_url`` (unless ``off_session``, or
created with ``automatic_payment_methods[allow_redirects]=never``), else it is refused (400, not
stored, as a request that fails validation). A 3-D Secure card's ``next_action`` is a
``redirect_to_url`` only when the confirm named a ``return_url``; otherwise it is Stripe.js's
``use_stripe_sdk``. Confirmed ``off_session``, such a card is declined
(``authentication_required``): the customer is not there to authenticate.

Confirm, capture and cancel of one intent, and refunds of it, lock the intent for as long as
they are in flight: another request on it meanwhile gets Stripe's 429 ``lock_timeout``. A
confirm, capture or cancel of an intent in a status that does not allow it is 400
``payment_intent_unexpected_state`` with the intent in ``error.payment_intent``; a declined card
is 402 ``card_error`` and leaves the intent in ``requires_payment_method``. Both are stored
under the idempotency key, like every answer once the parameters were valid.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from functools import partial
from typing import Any, NamedTuple

from fastapi import APIRouter, Request
from starlette.responses import Response

from orders.domain.stripe_currencies import stripe_refusal
from sandbox.faults import FaultsDep
from sandbox.idempotency import IdempotencyDep, IdempotencyKey, Outcome, resource_lock
from sandbox.ledger import LedgerDep, Resource, atomically, to_unix
from sandbox.limits import MAX_AMOUNT, MAX_TEXT_LENGTH
from sandbox.stripe import charges, disputes, events, search
from sandbox.stripe.cards import (
    AUTHENTICATION_FAILURE,
    PAYMENT_METHOD_PATTERN,
    Decline,
    decline_for,
    payment_method_object,
    requires_authentication,
)
from sandbox.stripe.errors import (
    STRIPE_REFUSALS,
    card_error,
    invalid_request,
    resource_missing,
    unexpected_state,
)
from sandbox.stripe.form import Params, read_form, read_query
from sandbox.stripe.lists import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    created_range,
    list_object,
    read_listing,
    search_result,
)

SERVICE = "payments"
router = APIRouter(tags=[SERVICE])

INTENTS = Resource(
    "payment_intents",
    "payment_intent",
    "pi",
    ("order_id", "amount", "currency", "payment_method", "status", "charge", "created"),
)

CAPTURE_METHODS = ("automatic", "manual")
CANCELLATION_REASONS = ("duplicate", "fraudulent", "requested_by_customer", "abandoned")
CANCELABLE = (
    "requires_payment_method",
    "requires_capture",
    "requires_confirmation",
    "requires_action",
    "processing",
)
CONFIRMABLE = ("requires_payment_method", "requires_confirmation", "requires_action")
EXPANDABLE = ("latest_charge", "customer")
"""Paths the sandbox expands on an intent, as Stripe does; an intent here has no customer, and
Stripe expands a ``null`` to ``null``."""
ALLOW_REDIRECTS = ("always", "never")
RETURN_URL_REQUIRED = (
    "A `return_url` must be specified because this Payment Intent is configured to "
    "automatically accept the payment methods enabled in the Dashboard, some of which may "
    "require a full page redirect to succeed. If you do not want to accept redirect-based "
    "payment methods, set `automatic_payment_methods[enabled]` to `true` and "
    "`automatic_payment_methods[allow_redirects]` to `never` when creating Setup Intents and "
    "Payment Intents."
)
"""Stripe's refusal of a confirm that needs a ``return_url`` and names none, word for word."""


def intent_lock(intent_id: str) -> str:
    """The lock a request on this intent holds while in flight (see ``sandbox.idempotency``)."""
    return resource_lock("payment_intent", intent_id)


def client_secret(intent_id: str) -> str:
    """The intent's client secret: what a customer's page shows to act on this intent only."""
    secret = hashlib.sha256(f"secret:{intent_id}".encode()).hexdigest()[:24]
    return f"{intent_id}_secret_{secret}"


def next_action(row: sqlite3.Row) -> dict[str, Any] | None:
    """Stripe's ``next_action`` of an intent waiting for 3-D Secure: the page to send them to.

    A link to send the customer to (``redirect_to_url``) only if the confirm said where they
    come back (``return_url``); otherwise what Stripe.js needs to show the challenge on the
    shop's own page (``use_stripe_sdk``, whose content Stripe documents as Stripe.js's alone).
    """
    if row["status"] != "requires_action":
        return None
    if row["return_url"] is None:
        sdk = {"type": "three_d_secure_redirect", "stripe_js": row["next_action_url"]}
        return {"type": "use_stripe_sdk", "use_stripe_sdk": sdk}
    redirect = {"return_url": row["return_url"], "url": row["next_action_url"]}
    return {"type": "redirect_to_url", "redirect_to_url": redirect}


BOTH_METHOD_CHOICES = (
    "You may only specify one of these parameters: automatic_payment_methods, payment_method_types."
)
"""Stripe's refusal of an intent that names its payment method types and enables automatic ones
(its wording for two exclusive parameters; seen for other pairs, such as
``automatic_payment_methods`` with ``confirmation_method``)."""


def automatic_payment_methods(row: sqlite3.Row) -> dict[str, Any] | None:
    """The intent's ``automatic_payment_methods`` (None: the payment method types it named)."""
    text = row["automatic_payment_methods"]
    return json.loads(text) if text else None


def require_return_url(
    automatic: dict[str, Any] | None, return_url: str | None, off_session: bool
) -> None:
    """Refuse a confirm Stripe refuses for want of a ``return_url`` (400, nothing stored).

    An intent with automatic payment methods may confirm into a method that redirects the
    customer, so Stripe wants to know where they come back; not when the customer is not in
    the flow (``off_session``) nor when the intent was created to allow no redirects.
    """
    redirects = automatic is not None and automatic.get("allow_redirects") != "never"
    if redirects and return_url is None and not off_session:
        raise invalid_request(RETURN_URL_REQUIRED)


def render_intent(
    db: sqlite3.Connection, row: sqlite3.Row, expand: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The PaymentIntent object of a ledger row (``expand``: ``latest_charge`` as an object)."""
    charge = charges.get_charge_row(db, row["charge"]) if row["charge"] else None
    status = row["status"]
    error = json.loads(row["last_payment_error"]) if row["last_payment_error"] else None
    # Like Stripe, a declined payment method is detached: it lives on in last_payment_error.
    method = None if status == "requires_payment_method" else (row["payment_method"] or None)
    # Like Stripe's: a declined attempt's failed charge is the latest until one succeeds.
    latest: Any = row["charge"] or charges.latest_failed(db, row["id"])
    if "latest_charge" in expand and latest is not None:
        latest = charges.render_any(db, latest)
    return {
        "id": row["id"],
        "object": "payment_intent",
        "amount": row["amount"],
        "amount_capturable": row["amount"] if status == "requires_capture" else 0,
        "amount_received": charge["amount_captured"] if charge and charge["captured"] else 0,
        "canceled_at": row["canceled_at"],
        "cancellation_reason": row["cancellation_reason"],
        "capture_method": row["capture_method"],
        "client_secret": client_secret(row["id"]),
        "confirmation_method": "automatic",
        "created": to_unix(row["created"]),
        "currency": str(row["currency"]).lower(),
        "customer": None,
        "description": row["description"],
        "last_payment_error": error,
        "latest_charge": latest,
        "livemode": False,
        "metadata": json.loads(row["metadata"]),
        "automatic_payment_methods": automatic_payment_methods(row),
        "next_action": next_action(row),
        "payment_method": method,
        "payment_method_types": ["card"],
        "status": status,
    }


def get_intent_row(db: sqlite3.Connection, intent_id: str) -> sqlite3.Row | None:
    """The ledger row of a payment intent, if there is one."""
    return INTENTS.get_row(db, intent_id)


def expire_due(db: sqlite3.Connection, now: float | None = None) -> int:
    """Cancel the intents whose authorization ran past ``capture_before``; how many there were.

    As Stripe does: the intent becomes ``canceled`` with ``cancellation_reason`` ``automatic``
    at the moment the authorization expired, and the held money is released. Run before any
    request reads an intent, and by the gateway's clock (``sandbox.stripe.clock``).
    """
    expired = charges.expired_authorizations(db, time.time() if now is None else now)
    if not expired:
        return 0
    with atomically(db):
        for charge in expired:
            at = int(charge["capture_before"])
            charges.release(db, charge["id"], at)
            db.execute(
                "UPDATE payment_intents SET status = 'canceled', canceled_at = ?,"
                " cancellation_reason = 'automatic'"
                " WHERE charge = ? AND status = 'requires_capture'",
                (at, charge["id"]),
            )
            for row in INTENTS.find_rows(db, charge=charge["id"]):
                search.snapshot(db, render_intent(db, row))
                _tell(db, row["id"], "payment_intent.canceled")
    return len(expired)


def _existing(db: sqlite3.Connection, intent_id: str) -> sqlite3.Row:
    expire_due(db)  # an answer never shows an authorization that has expired as still held
    row = get_intent_row(db, intent_id)
    if row is None:
        raise resource_missing("payment_intent", intent_id, "intent")
    return row


def _tell(db: sqlite3.Connection, intent_id: str, event_type: str) -> None:
    """Record Stripe's event about the intent as it is now (``events``), in this transaction."""
    row = get_intent_row(db, intent_id)
    assert row is not None
    events.record(db, event_type, render_intent(db, row))


def _changed(db: sqlite3.Connection, intent_id: str, expand: tuple[str, ...] = ()) -> Outcome:
    """Snapshot the intent for search (see ``search``) and answer with it."""
    row = _existing(db, intent_id)
    search.snapshot(db, render_intent(db, row))
    return Outcome(200, render_intent(db, row, expand))


class Confirmation(NamedTuple):
    """How a confirm goes on: the authorization's life, where 3-D Secure happens, and after."""

    validity_s: float
    """How long an authorization made can be captured."""
    pages: str
    """The providers' address as the caller reached it: the authentication page is there."""
    return_url: str | None = None
    off_session: bool = False
    """The customer is not in the flow: a card that needs 3-D Secure is declined."""


def _create(
    values: dict[str, Any],
    confirm: bool,
    expand: tuple[str, ...],
    confirmation: Confirmation,
    db: sqlite3.Connection,
) -> Outcome:
    status = "requires_confirmation" if values["payment_method"] else "requires_payment_method"
    created = INTENTS.insert(db, status=status, **values)
    if confirm:
        return _confirm(created["id"], None, expand, confirmation, db)
    return _changed(db, created["id"], expand)


def _confirm(
    intent_id: str,
    method: str | None,
    expand: tuple[str, ...],
    confirmation: Confirmation,
    db: sqlite3.Connection,
) -> Outcome:
    """Confirm the intent: authorized, declined, or waiting for the customer's 3-D Secure."""
    row = _existing(db, intent_id)
    status = row["status"]
    if status == "succeeded":
        message = (
            "You cannot confirm this PaymentIntent because it has already succeeded after being "
            "previously confirmed."
        )
        raise unexpected_state(message, render_intent(db, row))
    if status not in CONFIRMABLE:
        message = (
            f"You cannot confirm this PaymentIntent because it has a status of {status}. Only a "
            "PaymentIntent with one of the following statuses may be confirmed: "
            f"{', '.join(CONFIRMABLE)}."
        )
        raise unexpected_state(message, render_intent(db, row))
    method = method or (None if status == "requires_payment_method" else row["payment_method"])
    if not method:
        message = (
            "You cannot confirm this PaymentIntent because it's missing a payment method. You can "
            "either update the PaymentIntent with a payment method and then confirm it again, or "
            "confirm it again directly with a payment method."
        )
        raise unexpected_state(message, render_intent(db, row))
    decline = decline_for(method, off_session=confirmation.off_session)
    if decline is not None:
        return _decline(db, row, method, decline)
    if requires_authentication(method):
        page = f"{confirmation.pages}/payments/authenticate/{intent_id}"
        db.execute(
            "UPDATE payment_intents SET status = 'requires_action', payment_method = ?,"
            " next_action_url = ?, return_url = ?, last_payment_error = NULL WHERE id = ?",
            (
                method,
                f"{page}?client_secret={client_secret(intent_id)}",
                confirmation.return_url,
                intent_id,
            ),
        )
        _tell(db, intent_id, "payment_intent.requires_action")
        return _changed(db, intent_id, expand)
    return _authorize(db, row, method, confirmation.validity_s, expand)


def _decline(db: sqlite3.Connection, row: sqlite3.Row, method: str, decline: Decline) -> Outcome:
    """The card declined: a failed charge, the intent waits for another payment method (402)."""
    intent_id = row["id"]
    failed = charges.decline(db, row, method, decline.code, decline.decline_code, decline.message)
    payment_method = payment_method_object(method, int(time.time()))
    error = {
        "type": "card_error",
        "charge": failed,
        "code": decline.code,
        "decline_code": decline.decline_code,
        "message": decline.message,
        "payment_method": payment_method,
    }
    db.execute(
        "UPDATE payment_intents SET status = 'requires_payment_method', payment_method = ?,"
        " decline_code = ?, last_payment_error = ? WHERE id = ?",
        (method, decline.decline_code, json.dumps(error), intent_id),
    )
    _tell(db, intent_id, "payment_intent.payment_failed")
    intent = _changed(db, intent_id).body
    declined = card_error(
        decline.code, decline.decline_code, decline.message, intent, payment_method, failed
    )
    # Returned, not raised: the intent's new status must be committed with the answer.
    return Outcome(declined.status, declined.body)


def _authorize(
    db: sqlite3.Connection,
    row: sqlite3.Row,
    method: str,
    validity_s: float,
    expand: tuple[str, ...] = (),
) -> Outcome:
    """The card approved: captured at once (automatic) or held as an authorization (manual)."""
    automatic = row["capture_method"] == "automatic"
    charge_id = charges.authorize(db, row, method, automatic, validity_s)
    db.execute(
        "UPDATE payment_intents SET status = ?, payment_method = ?, charge = ?,"
        " last_payment_error = NULL WHERE id = ?",
        ("succeeded" if automatic else "requires_capture", method, charge_id, row["id"]),
    )
    authorized = "succeeded" if automatic else "amount_capturable_updated"
    _tell(db, row["id"], f"payment_intent.{authorized}")
    return _changed(db, row["id"], expand)


def authenticate(
    db: sqlite3.Connection, intent_id: str, completed: bool, validity_s: float
) -> dict[str, Any]:
    """The customer's 3-D Secure outcome for an intent in ``requires_action``; the intent.

    Completed: the card is authorized (or declined after authentication, as 4000 0084 0000
    1629 is). Failed: the intent waits for another payment method, the failure in
    ``last_payment_error`` (Stripe's ``payment_intent_authentication_failure``). An intent no
    longer waiting (a second click, cancelled meanwhile) is left as it is.
    """
    row = _existing(db, intent_id)
    if row["status"] != "requires_action":
        return render_intent(db, row)
    method = str(row["payment_method"])
    if not completed:
        error = {
            "type": "invalid_request_error",
            "code": AUTHENTICATION_FAILURE,
            "message": "The provided PaymentMethod has failed authentication. You can provide "
            "payment_method_data or a new PaymentMethod to attempt to fulfill this "
            "PaymentIntent again.",
            "payment_method": payment_method_object(method, int(time.time())),
        }
        db.execute(
            "UPDATE payment_intents SET status = 'requires_payment_method',"
            " last_payment_error = ? WHERE id = ?",
            (json.dumps(error), intent_id),
        )
        _tell(db, intent_id, "payment_intent.payment_failed")
        return _changed(db, intent_id).body
    decline = decline_for(method, authenticated=True)
    if decline is not None:
        _decline(db, row, method, decline)
    else:
        _authorize(db, row, method, validity_s)
    return render_intent(db, _existing(db, intent_id))


def _capture(
    intent_id: str, amount: int | None, expand: tuple[str, ...], db: sqlite3.Connection
) -> Outcome:
    row = _existing(db, intent_id)
    if row["status"] != "requires_capture":
        message = (
            "This PaymentIntent could not be captured because it has a status of "
            f"{row['status']}. Only a PaymentIntent with one of the following statuses may be "
            "captured: requires_capture."
        )
        raise unexpected_state(message, render_intent(db, row))
    amount = row["amount"] if amount is None else amount
    if amount > row["amount"]:
        message = (
            f"The amount to capture ({amount}) is greater than the amount capturable "
            f"({row['amount']})."
        )
        raise invalid_request(message, "amount_too_large", "amount_to_capture")
    charges.capture(db, row["charge"], amount)
    db.execute("UPDATE payment_intents SET status = 'succeeded' WHERE id = ?", (intent_id,))
    _tell(db, intent_id, "payment_intent.succeeded")
    disputes.open_if_test_card(db, row["charge"])
    return _changed(db, intent_id, expand)


def _cancel(
    intent_id: str, reason: str | None, expand: tuple[str, ...], db: sqlite3.Connection
) -> Outcome:
    row = _existing(db, intent_id)
    if row["status"] not in CANCELABLE:
        message = (
            f"You cannot cancel this PaymentIntent because it has a status of {row['status']}. "
            "Only a PaymentIntent with one of the following statuses may be canceled: "
            f"{', '.join(CANCELABLE)}."
        )
        raise unexpected_state(message, render_intent(db, row))
    if row["status"] == "requires_capture":
        charges.release(db, row["charge"])  # the authorization is let go: no money moved
    db.execute(
        "UPDATE payment_intents SET status = 'canceled', canceled_at = ?,"
        " cancellation_reason = ? WHERE id = ?",
        (int(time.time()), reason, intent_id),
    )
    _tell(db, intent_id, "payment_intent.canceled")
    return _changed(db, intent_id, expand)


def _pages(request: Request) -> str:
    """The providers' address as this request reached it (the customer's pages are there)."""
    return str(request.base_url).rstrip("/")


async def _run(
    request: Request,
    idem: IdempotencyDep,
    key: str,
    params: Params,
    effect: Any,
    lock: str | None,
) -> Response:
    return await idem.run(
        request, SERVICE, effect, lock, key=key, refusals=STRIPE_REFUSALS, params=params.raw
    )


class CreateRequest(NamedTuple):
    """A create's validated parameters: the ledger row's values and how it is confirmed."""

    values: dict[str, Any]
    confirm: bool
    expand: tuple[str, ...]
    return_url: str | None = None
    off_session: bool = False


def create_params(params: Params) -> CreateRequest:
    """Validate ``POST /v1/payment_intents``'s parameters: the row's values, confirm, expand.

    Raises the 400 naming the first parameter at fault (nothing is stored for it); an amount or
    currency Stripe does not charge (``orders.domain.stripe_currencies``) is refused as Stripe words
    it: ``amount_too_small`` below the currency's minimum charge, ``Invalid currency: ...``, an
    ISK or UGX amount not divisible by 100, a three-decimal amount whose last digit is not 0.
    """
    # The most Stripe charges is a rule of its currency table, checked with the others below.
    amount = params.integer("amount", required=True, minimum=1, maximum=2**63 - 1)
    currency = params.string(
        "currency", required=True, max_length=3, pattern=r"[A-Za-z]{3}", what="not a currency"
    )
    method = params.string(
        "payment_method", pattern=PAYMENT_METHOD_PATTERN, max_length=210, what="not a pm_ id"
    )
    capture_method = params.enum("capture_method", CAPTURE_METHODS, default="automatic")
    metadata = params.metadata()
    description = params.string("description", max_length=MAX_TEXT_LENGTH)
    confirm = params.boolean("confirm") or False
    automatic = _automatic(params, params.strings("payment_method_types"))
    return_url = params.string("return_url", max_length=MAX_TEXT_LENGTH)
    off_session = params.boolean("off_session") or False
    expand = params.expand(EXPANDABLE)
    params.done()
    if confirm and method is None:
        message = "You must provide a payment_method when confirm=true."
        raise invalid_request(message, "parameter_missing", "payment_method")
    if not confirm and (return_url is not None or off_session):
        param = "return_url" if return_url is not None else "off_session"
        message = f"You can only pass {param} when confirm=true."
        raise invalid_request(message, "parameter_invalid", param)
    if confirm:
        require_return_url(automatic, return_url, off_session)
    assert amount is not None and currency is not None
    # Well-formed, but an amount or currency Stripe does not charge: refused, nothing stored.
    if (refusal := stripe_refusal(amount, currency)) is not None:
        raise invalid_request(refusal.message, refusal.code, refusal.param)
    values = {
        "order_id": metadata.get("order_id", ""),
        "amount": amount,
        "currency": currency.lower(),
        "payment_method": method or "",
        "capture_method": capture_method,
        "metadata": json.dumps(metadata),
        "description": description,
        "automatic_payment_methods": json.dumps(automatic) if automatic else None,
    }
    return CreateRequest(values, confirm, expand, return_url, off_session)


def _automatic(params: Params, types: list[str]) -> dict[str, Any] | None:
    """The new intent's ``automatic_payment_methods``, or None (cards only).

    None if it names its payment method types (cards: the only kind here) or turns them off;
    refused if it does both at once;
    otherwise Stripe's default since API version 2023-08-16: the account's methods, redirects
    allowed unless it says ``never``.
    """
    given = params.hash("automatic_payment_methods")
    enabled, allow_redirects = None, None
    if given is not None:
        enabled = given.boolean("automatic_payment_methods[enabled]")
        allow_redirects = given.enum("automatic_payment_methods[allow_redirects]", ALLOW_REDIRECTS)
        given.done()
        if enabled is None:
            name = "automatic_payment_methods[enabled]"
            raise invalid_request(f"Missing required param: {name}.", "parameter_missing", name)
    if types and enabled:
        # Stripe takes one way of choosing the methods or the other, never both.
        raise invalid_request(BOTH_METHOD_CHOICES, param="automatic_payment_methods")
    if types or enabled is False:
        return None
    return {"allow_redirects": allow_redirects or "always", "enabled": True}


@router.post("/payment_intents")
async def create_payment_intent(
    request: Request, idem: IdempotencyDep, key: IdempotencyKey, faults: FaultsDep
) -> Response:
    """Create a payment intent: ``amount``, ``currency``, ``payment_method``, ``metadata``...

    No money moves. With a payment method it is ``requires_confirmation``; with
    ``confirm=true`` it is confirmed at once (and answers as a confirm does).
    """
    params = Params(await read_form(request))
    create = create_params(params)
    validity = faults.authorization_validity_s(SERVICE)
    confirmation = Confirmation(validity, _pages(request), create.return_url, create.off_session)
    effect = partial(_create, create.values, create.confirm, create.expand, confirmation)
    return await _run(request, idem, key, params, effect, None)


@router.get("/payment_intents")
async def list_payment_intents(request: Request, ledger: LedgerDep) -> dict[str, Any]:
    """List intents, newest first: all, or those ``created`` in a range (``created[gte]``...).

    Lists are consistent (unlike search): an intent shows as soon as it was created. Stripe's
    list has no metadata filter: whoever looks for an order's intents filters the pages. With
    ``expand[]=data.latest_charge`` each intent's latest charge is an object.
    """
    params = Params(read_query(request))
    created, args = created_range(params)
    listing = read_listing(params)
    expand = params.expand(("data.latest_charge",))
    params.done()
    db = ledger.db
    expire_due(db)  # a list never shows an authorization that has expired as still held
    rows = db.execute(f"SELECT * FROM payment_intents WHERE {created} ORDER BY rowid DESC", args)
    items = tuple(path.removeprefix("data.") for path in expand)
    data = [render_intent(db, row, items) for row in rows]
    return list_object("/v1/payment_intents", "payment_intent", data, listing)


@router.get("/payment_intents/search")
async def search_payment_intents(
    request: Request, ledger: LedgerDep, faults: FaultsDep
) -> dict[str, Any]:
    """Search intents with Stripe's query language (``metadata['order_id']:'o-1'``).

    Like Stripe's, search lags writes (``search_lag_ms``): never use it to read what was just
    written; retrieve the intent by id for that.
    """
    params = Params(read_query(request))
    query = params.string("query", required=True, max_length=MAX_TEXT_LENGTH)
    limit = params.integer("limit", minimum=1, maximum=MAX_LIMIT) or DEFAULT_LIMIT
    page = params.string("page", max_length=30, pattern=r"page_[0-9]{1,9}", what="not a page")
    expand = params.strings("expand")
    params.done()
    if any(path not in ("data.latest_charge",) for path in expand):
        raise invalid_request("This property cannot be expanded.", "parameter_invalid", "expand")
    assert query is not None
    db = ledger.db

    def live(intent_id: str) -> dict[str, Any]:
        return render_intent(db, _existing(db, intent_id))

    found = search.search(db, query, faults.search_lag_s(SERVICE), live)
    offset = int(page.removeprefix("page_")) if page else 0
    return search_result("/v1/payment_intents/search", found, limit, offset)


@router.get("/payment_intents/{intent}")
async def retrieve_payment_intent(
    intent: str, request: Request, ledger: LedgerDep
) -> dict[str, Any]:
    """Retrieve an intent as it is now (read-after-write, unlike search); 404 if unknown."""
    params = Params(read_query(request))
    params.string("client_secret", max_length=300)
    expand = params.expand(EXPANDABLE)
    params.done()
    return render_intent(ledger.db, _existing(ledger.db, intent), expand)


@router.post("/payment_intents/{intent}/confirm")
async def confirm_payment_intent(
    intent: str,
    request: Request,
    idem: IdempotencyDep,
    key: IdempotencyKey,
    faults: FaultsDep,
    ledger: LedgerDep,
) -> Response:
    """Confirm: the card approves (``requires_capture`` or ``succeeded``) or declines (402).

    A 3-D Secure card answers ``requires_action`` with a ``next_action``: ``redirect_to_url``
    if the confirm names a ``return_url`` (the customer authenticates there, then goes back
    to it), else ``use_stripe_sdk``. An intent with automatic payment methods needs that
    ``return_url`` (see ``require_return_url``). Only ``requires_confirmation``,
    ``requires_action`` and ``requires_payment_method`` (with a ``payment_method``) intents
    can be confirmed; any other is 400 ``payment_intent_unexpected_state``.
    """
    params = Params(await read_form(request))
    method = params.string(
        "payment_method", pattern=PAYMENT_METHOD_PATTERN, max_length=210, what="not a pm_ id"
    )
    return_url = params.string("return_url", max_length=MAX_TEXT_LENGTH)
    off_session = params.boolean("off_session") or False
    expand = params.expand(EXPANDABLE)
    params.done()
    # Validation, like the parameters': refused before the key is claimed, nothing stored. An
    # intent's payment methods never change once created, so reading them here is no race.
    row = get_intent_row(ledger.db, intent)
    if row is not None:
        require_return_url(automatic_payment_methods(row), return_url, off_session)
    confirmation = Confirmation(
        faults.authorization_validity_s(SERVICE), _pages(request), return_url, off_session
    )
    effect = partial(_confirm, intent, method, expand, confirmation)
    return await _run(request, idem, key, params, effect, intent_lock(intent))


@router.post("/payment_intents/{intent}/capture")
async def capture_payment_intent(
    intent: str, request: Request, idem: IdempotencyDep, key: IdempotencyKey
) -> Response:
    """Capture an authorized intent (``requires_capture`` -> ``succeeded``): the money moves.

    ``amount_to_capture`` captures less than the amount (the rest is released).
    """
    params = Params(await read_form(request))
    amount = params.integer("amount_to_capture", minimum=1, maximum=MAX_AMOUNT)
    expand = params.expand(EXPANDABLE)
    params.done()
    effect = partial(_capture, intent, amount, expand)
    return await _run(request, idem, key, params, effect, intent_lock(intent))


@router.post("/payment_intents/{intent}/cancel")
async def cancel_payment_intent(
    intent: str, request: Request, idem: IdempotencyDep, key: IdempotencyKey
) -> Response:
    """Cancel an intent not yet succeeded; an authorization (``requires_capture``) is released.

    A ``succeeded`` or ``canceled`` intent is 400 ``payment_intent_unexpected_state``: refund a
    succeeded one instead.
    """
    params = Params(await read_form(request))
    reason = params.enum("cancellation_reason", CANCELLATION_REASONS)
    expand = params.expand(EXPANDABLE)
    params.done()
    effect = partial(_cancel, intent, reason, expand)
    return await _run(request, idem, key, params, effect, intent_lock(intent))
