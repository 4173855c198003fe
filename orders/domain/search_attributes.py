"""Search attributes that let people list and filter orders in the Temporal UI and CLI."""

from temporalio.common import (
    SearchAttributeKey,
    SearchAttributePair,
    SearchAttributeUpdate,
    TypedSearchAttributes,
)

from orders.domain.status import OrderStatus

ORDER_STATUS = SearchAttributeKey.for_keyword("OrderStatus")
CUSTOMER_ID = SearchAttributeKey.for_keyword("CustomerId")
ORDER_ID = SearchAttributeKey.for_keyword("OrderId")
"""Set by workflows about an order other than its own (a dispute), to find them by order."""

ALL = (ORDER_STATUS, CUSTOMER_ID, ORDER_ID)
"""Every custom search attribute; each must be registered on the namespace before use."""


def of_order(status: OrderStatus, customer_id: str) -> TypedSearchAttributes:
    """An order's search attributes: given when it starts, kept up to date by its workflow."""
    return TypedSearchAttributes(
        [
            SearchAttributePair(ORDER_STATUS, status.value),
            SearchAttributePair(CUSTOMER_ID, customer_id),
        ]
    )


def changes(
    current: TypedSearchAttributes, wanted: TypedSearchAttributes
) -> list[SearchAttributeUpdate[str]]:
    """The updates that bring ``current`` to ``wanted``: none for a value already set."""
    return [
        pair.key.value_set(pair.value) for pair in wanted if current.get(pair.key) != pair.value
    ]


def dev_server_flags() -> list[str]:
    """``--search-attribute NAME=Type`` flags that register ``ALL`` when the dev server starts."""
    flags: list[str] = []
    for key in ALL:
        value_type = key.indexed_value_type.name.removeprefix("INDEXED_VALUE_TYPE_").title()
        flags += ["--search-attribute", f"{key.name}={value_type}"]
    return flags
