"""Helpers shared by the tests: sample orders and waiting on an order's status."""

import asyncio
import time
import uuid
from typing import Any

from temporalio.client import Client

from client.orders import order_status
from domain.models import Order, OrderView
from domain.status import OrderStatus


def make_order(**overrides: Any) -> Order:
    """A valid order with a unique id; keyword arguments replace top-level fields."""
    data: dict[str, Any] = {
        "id": f"test-{uuid.uuid4().hex[:12]}",
        "customer": {"id": "cust-1", "name": "Grace Hopper", "email": "grace@example.com"},
        "items": [
            {"sku": "SKU-MUG", "quantity": 2, "unit_price": 1250},
            {"sku": "SKU-TEE", "quantity": 1, "unit_price": 2000},
        ],
        "currency": "USD",
        "payment_method": "pm_card_visa",
        "shipping_address": {
            "name": "Grace Hopper",
            "line1": "1 Navy Way",
            "city": "Arlington",
            "postal_code": "22202",
            "country": "US",
        },
    }
    data.update(overrides)
    return Order.model_validate(data)


async def wait_for_status(
    client: Client, order_id: str, status: OrderStatus, within: float = 30.0
) -> OrderView:
    """Poll the order's query until it reaches ``status``."""
    deadline = time.monotonic() + within
    view = None
    while time.monotonic() < deadline:
        view = await order_status(client, order_id)
        if view.status == status:
            return view
        await asyncio.sleep(0.1)
    raise AssertionError(f"{order_id} did not reach {status.value}; last view: {view}")
