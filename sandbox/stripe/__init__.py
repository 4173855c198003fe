"""The sandbox payment gateway, speaking the subset of Stripe's v1 API an order needs.

The official ``stripe`` library works against it unchanged (``base_addresses={"api": <the
providers' address>}``), and the same calls work against Stripe's test mode. One module per
resource, named as Stripe's API reference names it, so its documentation is the map:

- ``payment_intents``: ``/v1/payment_intents`` (create, retrieve, confirm, capture, cancel,
  list, search)
- ``charges``: ``/v1/charges`` (retrieve, list), made by confirming an intent
- ``refunds``: ``/v1/refunds`` (create, retrieve, list)
- ``search``: the search query language, and the lag that makes search eventually consistent
- ``cards``: the test payment methods and how they decline
- ``form``: form bodies in bracket notation, and Stripe's parameter errors
- ``errors``: Stripe's error shapes, and the idempotency layer's refusals in Stripe's words
- ``lists``: list objects (pages, cursors, the ``created`` filter) and search results
- ``request_ids``: the ``Request-Id`` header on every answer
- ``rate_limits``: the account's requests per second, and Stripe's 429 above them
- ``authentication``: the customer's 3-D Secure page an intent's ``next_action`` names
- ``events``: Stripe's events about all of these, from an outbox, signed as Stripe signs
- ``disputes``: chargebacks on captured payments (test card, or opened by an operator)
"""

from fastapi import APIRouter, Depends

from sandbox.stripe import charges, payment_intents, rate_limits, refunds

PREFIX = "/v1"

router = APIRouter(prefix=PREFIX, dependencies=[Depends(rate_limits.enforce)])
router.include_router(payment_intents.router)
router.include_router(charges.router)
router.include_router(refunds.router)

__all__ = ["PREFIX", "router"]
