"""Search attributes that let people list and filter orders in the Temporal UI and CLI."""

from temporalio.common import SearchAttributeKey

ORDER_STATUS = SearchAttributeKey.for_keyword("OrderStatus")
CUSTOMER_ID = SearchAttributeKey.for_keyword("CustomerId")

ALL = (ORDER_STATUS, CUSTOMER_ID)
"""Every custom search attribute; each must be registered on the namespace before use."""


def dev_server_flags() -> list[str]:
    """``--search-attribute NAME=Type`` flags that register ``ALL`` when the dev server starts."""
    flags: list[str] = []
    for key in ALL:
        value_type = key.indexed_value_type.name.removeprefix("INDEXED_VALUE_TYPE_").title()
        flags += ["--search-attribute", f"{key.name}={value_type}"]
    return flags
