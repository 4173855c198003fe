"""What only the sandbox gateway can be made to do, and the guard that keeps it out of the contract.

These are not contract tests (``tests/test_stripe_contract.py``): each needs the sandbox to do
something no client can arrange against Stripe from outside. Stripe has these behaviours, but
a test cannot make them happen on demand there:

- a request held in flight (``hold_next``), so that a second one meets it: Stripe's 409
  ``idempotency_key_in_use`` for the same key, 429 ``lock_timeout`` for the same intent;
- search lagging writes by a lag the test chooses (Stripe's lags by seconds, a minute at worst,
  never on command);
- the customer's 3-D Secure page completed or failed: Stripe's is a browser's page at its bank's
  (``tests/test_three_d_secure.py`` clicks the sandbox's in headless Chromium).

What the Stripe documentation says of each, on which the sandbox's model rests, is in
``docs/payments.md`` ("Checked only in the sandbox"). The money is counted in the sandbox's
ledger here, since these tests are the sandbox's own.
"""

from __future__ import annotations

import ast
import asyncio
import html
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
import stripe

from sandbox.admin_client import SandboxAdmin
from tests.support import stripe_against
from tests.test_stripe_contract import RETURN_URL, create, headers, key


@pytest.fixture
async def client(sandbox: SandboxAdmin) -> AsyncIterator[stripe.StripeClient]:
    """The official client against the sandbox gateway."""
    async with stripe_against(sandbox) as gateway:
        yield gateway


@pytest.fixture
def order_id() -> str:
    return f"faults-{uuid.uuid4().hex[:10]}"


# -- A request held in flight ------------------------------------------------------------------


@asynccontextmanager
async def confirm_held(
    client: stripe.StripeClient, sandbox: SandboxAdmin, order_id: str
) -> AsyncIterator[stripe.PaymentIntent]:
    """A new intent whose confirm the gateway holds in flight for the block; released after it,
    the confirm must have authorized the card."""
    intent = await create(client, order_id)
    sandbox.set_faults("payments", hold_next=1, key_prefix=f"{order_id}:confirm")
    held = asyncio.create_task(
        client.v1.payment_intents.confirm_async(intent.id, {}, key(order_id, "confirm"))
    )
    try:
        await asyncio.to_thread(sandbox.wait_held, "payments", 1)
        yield intent
    finally:
        await asyncio.to_thread(sandbox.release, "payments")
    assert (await held).status == "requires_capture"


async def test_a_key_in_flight_is_409_idempotency_key_in_use(
    client: stripe.StripeClient, sandbox: SandboxAdmin, order_id: str
) -> None:
    async with confirm_held(client, sandbox, order_id) as intent:
        with pytest.raises(stripe.APIError) as busy:
            await client.v1.payment_intents.confirm_async(intent.id, {}, key(order_id, "confirm"))
        # The library builds a 409's APIError without a code; the error object has it.
        assert busy.value.http_status == 409 and busy.value.error is not None
        assert (busy.value.error.type, busy.value.error.code) == (
            "idempotency_error",
            "idempotency_key_in_use",
        )
    assert sandbox.effects(order_id).authorizations == 1


async def test_an_intent_locked_by_a_held_confirm_refuses_cancel_with_lock_timeout(
    client: stripe.StripeClient, sandbox: SandboxAdmin, order_id: str
) -> None:
    async with confirm_held(client, sandbox, order_id) as intent:
        with pytest.raises(stripe.RateLimitError) as locked:
            await client.v1.payment_intents.cancel_async(intent.id, {}, key(order_id, "cancel"))
        assert locked.value.http_status == 429 and locked.value.error is not None
        assert (locked.value.error.type, locked.value.error.code) == (
            "invalid_request_error",
            "lock_timeout",
        )
    # The lock_timeout was not stored: the same cancel key now releases the authorization.
    cancelled = await client.v1.payment_intents.cancel_async(intent.id, {}, key(order_id, "cancel"))
    assert cancelled.status == "canceled"
    assert headers(cancelled).get("Idempotent-Replayed") is None
    effects = sandbox.effects(order_id)
    assert (effects.authorizations, effects.charges, effects.released) == (1, 0, 1)


# -- Search lagging writes by a chosen lag -----------------------------------------------------


async def test_search_lags_writes(
    client: stripe.StripeClient, sandbox: SandboxAdmin, order_id: str
) -> None:
    sandbox.set_faults("payments", search_lag_ms=60_000)
    intent = await create(client, order_id)
    query = f"metadata['order_id']:'{order_id}'"
    result = await client.v1.payment_intents.search_async({"query": query})
    assert result["object"] == "search_result" and result.data == []
    assert (await client.v1.payment_intents.retrieve_async(intent.id)).id == intent.id
    sandbox.set_faults("payments", search_lag_ms=300)
    await asyncio.sleep(0.4)
    found = await client.v1.payment_intents.search_async({"query": query})
    assert [item.id for item in found.data] == [intent.id]
    # A change lags too: search still sees the intent as it was before the confirm.
    await client.v1.payment_intents.confirm_async(intent.id, {}, key(order_id, "confirm"))
    stale = await client.v1.payment_intents.search_async({"query": query})
    assert [item.status for item in stale.data] == ["requires_confirmation"]
    sandbox.set_faults("payments", search_lag_ms=0)
    both = f"{query} AND status:'requires_capture'"
    assert [i.id for i in (await client.v1.payment_intents.search_async({"query": both})).data] == [
        intent.id
    ]


async def test_the_default_search_lag_hides_a_new_intent(
    client: stripe.StripeClient, order_id: str
) -> None:
    intent = await create(client, order_id)
    query = f"metadata['order_id']:'{order_id}'"
    assert (await client.v1.payment_intents.search_async({"query": query})).data == []
    await asyncio.sleep(1.1)  # the default lag is 1000 ms
    found = await client.v1.payment_intents.search_async({"query": query})
    assert [item.id for item in found.data] == [intent.id]


# -- The customer's 3-D Secure page -------------------------------------------------------------


async def waiting_for_the_customer(
    client: stripe.StripeClient, order_id: str, method: str
) -> tuple[stripe.PaymentIntent, str]:
    """A 3-D Secure card's intent confirmed (``requires_action``), and its page's address."""
    intent = await create(client, order_id, method)
    waiting = await client.v1.payment_intents.confirm_async(
        intent.id, {"return_url": RETURN_URL}, key(order_id, "confirm")
    )
    assert waiting.next_action is not None and waiting.next_action.redirect_to_url is not None
    return waiting, str(waiting.next_action.redirect_to_url.url)


def way_back(page: str) -> str | None:
    """The page's link back to the shop (its ``return`` anchor), if it offers one."""
    found = re.search(r"<a id='return' href=\"([^\"]*)\"", page)
    return html.unescape(found.group(1)) if found else None


def way_back_to(intent: stripe.PaymentIntent, redirect_status: str) -> str:
    """Where Stripe sends the customer back: the return URL, told which intent and how."""
    query = urlencode(
        {
            "payment_intent": intent.id,
            "payment_intent_client_secret": intent.client_secret,
            "redirect_status": redirect_status,
        }
    )
    return f"{RETURN_URL}?{query}"


async def test_the_customer_completes_3d_secure_on_the_page_and_the_card_is_authorized(
    client: stripe.StripeClient, sandbox: SandboxAdmin, order_id: str
) -> None:
    waiting, url = await waiting_for_the_customer(
        client, order_id, "pm_card_authenticationRequired"
    )
    assert str(waiting.client_secret) in url  # the customer's page, for this intent only
    assert sandbox.effects(order_id).authorizations == 0  # nothing authorized yet
    async with httpx.AsyncClient(timeout=10) as http:
        wrong = await http.get(url.replace("_secret_", "_secret_x"))
        page = await http.get(url)
        done = await http.post(f"{url}&outcome=complete")
    assert wrong.status_code == 404 and 'id="complete"' in page.text
    assert done.status_code == 200 and "Authentication completed" in done.text
    assert way_back(done.text) == way_back_to(waiting, "succeeded")
    authorized = await client.v1.payment_intents.retrieve_async(waiting.id)
    assert (authorized.status, authorized.next_action) == ("requires_capture", None)
    assert sandbox.effects(order_id).authorizations == 1


async def test_a_failed_authentication_leaves_the_intent_waiting_for_another_card(
    client: stripe.StripeClient, sandbox: SandboxAdmin, order_id: str
) -> None:
    waiting, url = await waiting_for_the_customer(client, order_id, "pm_card_threeDSecure2Required")
    async with httpx.AsyncClient(timeout=10) as http:
        failed_page = await http.post(f"{url}&outcome=fail")
    assert failed_page.status_code == 200 and "Authentication failed" in failed_page.text
    assert way_back(failed_page.text) == way_back_to(waiting, "failed")
    failed = await client.v1.payment_intents.retrieve_async(waiting.id)
    assert failed.status == "requires_payment_method"
    assert failed.last_payment_error is not None
    assert failed.last_payment_error.code == "payment_intent_authentication_failure"
    assert sandbox.effects(order_id).authorizations == 0


# -- The guard: the contract module reaches the sandbox only through its target ------------------


CONTRACT = Path(__file__).with_name("test_stripe_contract.py")
MAY_REACH_THE_SANDBOX = frozenset({"target", "_the_sandbox_books_agree_with_its_api"})
"""The contract module's only ways to the sandbox: the client's target (its address and key in
the sandbox run) and the teardown that checks the sandbox's ledger against its API."""
SANDBOX_WORDS = ("sandbox", "getfixturevalue", "/admin", "set_faults", "hold_next")
"""Words of a function that reaches the sandbox (fixture, admin API, faults), case ignored."""


def words_of(node: ast.AST) -> set[str]:
    """The names, attributes, parameters and strings in ``node`` (docstrings left out: a bare
    string statement is prose, not code)."""
    prose = {
        id(child.value)
        for child in ast.walk(node)
        if isinstance(child, ast.Expr) and isinstance(child.value, ast.Constant)
    }
    found: set[str] = set()
    for child in ast.walk(node):
        if isinstance(child, ast.Name):
            found.add(child.id)
        elif isinstance(child, ast.Attribute):
            found.add(child.attr)
        elif isinstance(child, ast.arg):
            found.add(child.arg)
        elif (
            isinstance(child, ast.Constant)
            and isinstance(child.value, str)
            and id(child) not in prose
        ):
            found.add(child.value)
    return found


def parametrized(function: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    """The argument names ``@pytest.mark.parametrize`` gives ``function``."""
    names: set[str] = set()
    for decorator in function.decorator_list:
        if isinstance(decorator, ast.Call) and getattr(decorator.func, "attr", "") == "parametrize":
            first = decorator.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                names |= {name.strip() for name in first.value.split(",")}
            elif isinstance(first, (ast.Tuple, ast.List)):
                names |= {str(item.value) for item in first.elts if isinstance(item, ast.Constant)}
    return names


def is_fixture(function: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """Whether ``function`` is decorated with ``pytest.fixture`` (called or not)."""
    for decorator in function.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        if isinstance(target, ast.Attribute) and target.attr == "fixture":
            return True
    return False


def sandbox_reaches(source: str) -> list[str]:
    """How the module in ``source`` reaches the sandbox other than through its target.

    One line per offence: a function or class (test, helper or fixture) that names the sandbox,
    its admin API or its faults; a test asking for a fixture the module does not define (a
    shared one such as ``sandbox`` or ``task_queue``); a test that runs on one target only.
    """
    tree = ast.parse(source)
    functions = [
        node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    ]
    fixtures = {function.name for function in functions if is_fixture(function)}
    offences: list[str] = []
    for node in tree.body:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        if node.name in MAY_REACH_THE_SANDBOX:
            continue
        words = {word.lower() for word in words_of(node)}
        named = sorted({mark for mark in SANDBOX_WORDS if any(mark in word for word in words)})
        if named:
            offences.append(f"{node.name} names {', '.join(named)}")
        if isinstance(node, ast.ClassDef) or not node.name.startswith("test_"):
            continue
        asked = {arg.arg for arg in node.args.args}
        foreign = sorted(asked - fixtures - parametrized(node))
        if foreign:
            offences.append(f"{node.name} asks for {', '.join(foreign)}")
        if not asked & {"client", "target"}:
            offences.append(f"{node.name} runs on one target only (neither client nor target)")
    return offences


def test_no_contract_test_reaches_the_sandbox_but_through_its_target() -> None:
    assert sandbox_reaches(CONTRACT.read_text(encoding="utf-8")) == []


def test_the_guard_sees_a_contract_test_reach_the_sandbox() -> None:
    source = CONTRACT.read_text(encoding="utf-8")
    for added, offences in (
        (
            "async def test_x(client, sandbox):\n    pass\n",
            ["test_x names sandbox", "test_x asks for sandbox"],
        ),
        ("async def test_x(client, task_queue):\n    pass\n", ["test_x asks for task_queue"]),
        (
            "async def test_x(order_id):\n    pass\n",
            ["test_x runs on one target only (neither client nor target)"],
        ),
        (
            "def helper(request):\n    return request.getfixturevalue('x')\n",
            ["helper names getfixturevalue"],
        ),
        (
            "async def test_x(client):\n    httpx.get(f'{BASE}/admin/ledger')\n",
            ["test_x names /admin"],
        ),
        (
            "async def test_x(client, target):\n    if target.name == SANDBOX:\n        pass\n",
            ["test_x names sandbox"],
        ),
    ):
        assert sandbox_reaches(f"{source}\n\n{added}") == offences
