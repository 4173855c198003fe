"""Place orders, report shipments, and look at orders from the command line.

Exit codes: 0 done; 1 Temporal unreachable, no worker answered, or another failure;
2 invalid input (an order Stripe would refuse to charge too: below the currency's minimum, a
currency Stripe does not support...); 3 order already exists; 4 no such order; 5 the order
refused the request in its current state; 6 the order accepted a cancel or resolve but had
not finished it within --timeout (it carries on; follow it with the status command); 7 intake
is paused: start refused new orders and started nothing (see: starter.py intake status).
"""

import argparse
import asyncio
import json
import os
import re
import secrets
import sys
import traceback
from collections.abc import Callable, Coroutine
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError
from temporalio.client import Client

from orders.client.errors import OrderError
from orders.client.exit import exit_now
from orders.client.orders import (
    AcceptedRequest,
    OrderStillRunning,
    follow_order,
    list_orders,
    order_dispute,
    order_status,
    placement_refusal,
    request_cancel,
    request_resolve,
    ship_order,
    start_order,
)
from orders.client.temporal import TemporalConnectionError
from orders.client.temporal import connect as connect_temporal
from orders.domain.currencies import format_money
from orders.domain.models import (
    CancelRequest,
    Identifier,
    Order,
    OrderOptions,
    OrderView,
    ResolveRequest,
    Shipment,
)
from orders.domain.status import OperatorAction, OrderStatus, StepState
from orders.intake.client import intake_status, pause_intake, resume_intake
from orders.intake.contract import IntakeMode, IntakeStatus, human
from orders.telemetry import tracing

EXIT_INVALID_INPUT = 2
MAX_ORDER_FILE_BYTES = 1_000_000


async def connect(profile: str | None) -> Client:
    """Connect to Temporal, tracing the calls when tracing is on (``orders.telemetry.tracing``)."""
    return await connect_temporal(profile, interceptors=tracing.client_interceptors())


class InputError(Exception):
    """The command line or order file is wrong; the message says how to fix it."""


def _item(text: str) -> dict[str, Any]:
    try:
        sku, quantity, unit_price = text.split(":")
        return {"sku": sku, "quantity": int(quantity), "unit_price": int(unit_price)}
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not SKU:QUANTITY:UNIT_PRICE (price in minor units, e.g. SKU-1:2:1999)"
        ) from None


_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(text: str) -> timedelta:
    match = _DURATION.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 90s, 15m, 2h or 3d")
    try:
        return timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])
    except OverflowError:
        raise argparse.ArgumentTypeError(f"{text!r} is too long a duration") from None


_ORDER_ID = TypeAdapter(Identifier)


def _order_id(text: str) -> str:
    """An order id as the order model takes it; anything else never reaches Temporal."""
    try:
        return _ORDER_ID.validate_python(text)
    except ValidationError as err:
        reason = err.errors()[0]["msg"].removeprefix("Value error, ")
        raise argparse.ArgumentTypeError(f"not an order id: {reason}") from None


def _wait_options(command: argparse.ArgumentParser) -> None:
    """--no-wait and --timeout: how long cancel and resolve follow the order once accepted."""
    wait = command.add_mutually_exclusive_group()
    wait.add_argument(
        "--no-wait", action="store_true", help="return once the order has accepted the request"
    )
    wait.add_argument(
        "--timeout",
        type=_duration,
        metavar="DURATION",
        help="stop following after this long, exit 6; the order carries on (default: no limit)",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--profile", help="Temporal client config profile")
    commands = parser.add_subparsers(dest="command", required=True)

    start = commands.add_parser("start", help="place an order (from a JSON file and/or flags)")
    start.add_argument("--file", type=Path, help="order as JSON (see examples/order.json)")
    start.add_argument("--order-id", help="default: from the file, else a new random id")
    start.add_argument("--customer-id")
    start.add_argument("--name", help="customer name")
    start.add_argument("--email", help="customer email")
    start.add_argument(
        "--item",
        type=_item,
        action="append",
        metavar="SKU:QTY:UNIT_PRICE",
        help="a line item, unit price in minor units; repeat for more",
    )
    start.add_argument("--currency", help="ISO 4217 code (default USD)")
    start.add_argument(
        "--payment-method", help="token such as pm_card_visa (default), never a card number"
    )
    start.add_argument("--ship-to-name", help="default: the customer name")
    start.add_argument("--line1", help="street address")
    start.add_argument("--line2")
    start.add_argument("--city")
    start.add_argument("--postal-code")
    start.add_argument("--country", help="ISO 3166 two-letter code")
    start.add_argument(
        "--payment-retry-budget",
        type=_duration,
        metavar="DURATION",
        help="retry a failing gateway this long, then needs-attention (default 1h)",
    )
    start.add_argument(
        "--step-retry-budget",
        type=_duration,
        metavar="DURATION",
        help="retry any other failing call this long, then needs-attention (default 6h)",
    )
    start.add_argument(
        "--shipment-delayed-after",
        type=_duration,
        metavar="DURATION",
        help="no shipment by then: one delay email (default 3d)",
    )
    start.add_argument(
        "--shipment-attention-after",
        type=_duration,
        metavar="DURATION",
        help="no shipment by then: needs-attention (default 14d)",
    )
    start.add_argument(
        "--authentication-wait",
        type=_duration,
        metavar="DURATION",
        help="a card that needs 3-D Secure: wait this long for the customer, reminding once "
        "halfway, then cancel with nothing charged (default 24h)",
    )

    ship = commands.add_parser("ship", help="report that the warehouse shipped an order")
    ship.add_argument("order_id", type=_order_id)
    ship.add_argument("--carrier", required=True)
    ship.add_argument("--tracking", required=True, help="tracking number")

    cancel = commands.add_parser("cancel", help="cancel an order that has not shipped (refunds it)")
    cancel.add_argument("order_id", type=_order_id)
    cancel.add_argument("--reason", required=True, help="why; quoted in the customer's email")
    _wait_options(cancel)

    resolve = commands.add_parser("resolve", help="decide for an order that needs attention")
    resolve.add_argument("order_id", type=_order_id)
    resolve.add_argument("--action", required=True, choices=[a.value for a in OperatorAction])
    resolve.add_argument("--reason", help="why (for cancel; quoted in the customer's email)")
    _wait_options(resolve)

    status = commands.add_parser("status", help="show an order's status and timeline")
    status.add_argument("order_id", type=_order_id)
    status.add_argument("--json", action="store_true", help="print the read model as JSON")

    listing = commands.add_parser("list", help="list orders, newest first")
    listing.add_argument("--status", choices=[s.value for s in OrderStatus])
    listing.add_argument("--limit", type=int, default=50)

    intake = commands.add_parser(
        "intake", help="whether new orders are taken; pause or resume taking them"
    )
    intake_commands = intake.add_subparsers(dest="intake_command", required=True)
    intake_status = intake_commands.add_parser("status", help="open or paused, by whom and why")
    intake_status.add_argument("--json", action="store_true", help="print the status as JSON")
    pause = intake_commands.add_parser(
        "pause", help="refuse new orders (exit 7) until resumed; orders placed carry on"
    )
    pause.add_argument("--reason", required=True, help="why; shown to whoever is refused")
    resume = intake_commands.add_parser("resume", help="take new orders again")
    resume.add_argument("--reason", default="", help="why (kept in the breaker's history)")
    return parser  # fmt: skip


def _order_from_args(args: argparse.Namespace) -> Order:
    data: dict[str, Any] = _read_order_file(args.file) if args.file else {}
    customer = data.setdefault("customer", {})
    address = data.setdefault("shipping_address", {})
    flags = [
        (data, "id", args.order_id),
        (customer, "id", args.customer_id),
        (customer, "name", args.name),
        (customer, "email", args.email),
        (data, "items", args.item),
        (data, "currency", args.currency),
        (data, "payment_method", args.payment_method),
        (address, "name", args.ship_to_name),
        (address, "line1", args.line1),
        (address, "line2", args.line2),
        (address, "city", args.city),
        (address, "postal_code", args.postal_code),
        (address, "country", args.country),
    ]
    for target, key, value in flags:
        if value is not None:
            target[key] = value
    data.setdefault("id", f"order-{secrets.token_hex(4)}")
    data.setdefault("currency", "USD")
    data.setdefault("payment_method", "pm_card_visa")
    if "name" in customer:
        address.setdefault("name", customer["name"])
    try:
        return Order.model_validate(data)
    except ValidationError as err:
        raise InputError("the order is invalid:\n" + _describe(err)) from None


def _options_from_args(args: argparse.Namespace) -> OrderOptions:
    given = {
        "payment_retry_budget": args.payment_retry_budget,
        "step_retry_budget": args.step_retry_budget,
        "shipment_delayed_after": args.shipment_delayed_after,
        "shipment_attention_after": args.shipment_attention_after,
        "authentication_wait": args.authentication_wait,
    }
    try:
        return OrderOptions.model_validate({k: v for k, v in given.items() if v is not None})
    except ValidationError as err:
        raise InputError("the options are invalid:\n" + _describe(err)) from None


def _read_order_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_ORDER_FILE_BYTES + 1)
    except OSError as err:
        raise InputError(f"cannot read {path}: {err.strerror}") from None
    if len(raw) > MAX_ORDER_FILE_BYTES:
        raise InputError(f"{path} is over {MAX_ORDER_FILE_BYTES:,} bytes; an order is a few KB")
    try:
        data = json.loads(raw)
    except RecursionError:
        raise InputError(f"{path} is not an order: its JSON is nested too deeply") from None
    except ValueError as err:  # malformed JSON, not UTF-8, a number of thousands of digits
        raise InputError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path} must hold one JSON object (an order)")
    return data


def _describe(err: ValidationError) -> str:
    """One line per field; never echoes the input, which might be a card number."""
    lines = []
    for error in err.errors():
        field = ".".join(str(part) for part in error["loc"]) or "order"
        lines.append(f"  {field}: {error['msg'].removeprefix('Value error, ')}")
    return "\n".join(lines)


def _print_view(view: OrderView) -> None:
    print(f"order {view.order_id}: {view.status.value}")
    print(f"  customer     {view.customer_id}")
    print(f"  total        {format_money(view.total, view.currency)}")
    print(f"  transaction  {view.transaction_id or '-'}")
    tracking = f"{view.shipment.carrier} {view.shipment.tracking_number}" if view.shipment else "-"
    print(f"  tracking     {tracking}")
    if view.authorization_expires_at:
        print(f"  authorized   until {view.authorization_expires_at:%Y-%m-%d %H:%M:%S} UTC")
    if view.refund_id:
        print(f"  refund       {view.refund_id} {view.refund_status or ''}".rstrip())
    if view.failure_reason:
        print(f"  reason       {view.failure_reason}")
    if view.attention_reason:
        print(f"  attention    {view.attention_reason}")
    if dispute := view.dispute:
        due = f", evidence due {dispute.evidence_due_by:%Y-%m-%d %H:%M} UTC"
        print(
            f"  dispute      {dispute.id} {dispute.status}: {dispute.reason}, "
            f"{dispute.amount} {dispute.currency.upper()} (Stripe's minor units)"
            + (due if dispute.evidence_due_by and dispute.status == "needs_response" else "")
        )
    print("  timeline")
    for record in view.timeline:
        took = ""
        if record.finished_at:
            took = f"{(record.finished_at - record.started_at).total_seconds():.2f}s"
        print(
            f"    {record.started_at:%Y-%m-%d %H:%M:%S}  {record.step.value:<19}"
            f" {record.state.value:<10} {took:>8}  {record.detail or ''}"
        )


async def _start(args: argparse.Namespace) -> None:
    order = _order_from_args(args)
    # Before connecting: an order Stripe would refuse is the user's to fix, whatever Temporal.
    if (refusal := placement_refusal(order)) is not None:
        raise InputError(refusal)
    options = _options_from_args(args)
    client = await connect(args.profile)
    await start_order(client, order, options=options)
    print(f"order {order.id} started: {format_money(order.total, order.currency)} "
          f"for {order.customer.email}")  # fmt: skip
    print(f"  follow it: starter.py status {order.id}")


async def _ship(args: argparse.Namespace) -> None:
    try:
        shipment = Shipment(carrier=args.carrier, tracking_number=args.tracking)
    except ValidationError as err:
        raise InputError("the shipment is invalid:\n" + _describe(err)) from None
    client = await connect(args.profile)
    await ship_order(client, args.order_id, shipment)
    print(
        f"order {args.order_id}: shipped signal sent",
        f"({shipment.carrier} {shipment.tracking_number})",
    )


async def _cancel(args: argparse.Namespace) -> None:
    try:
        request = CancelRequest(reason=args.reason)
    except ValidationError as err:
        raise InputError("the cancel is invalid:\n" + _describe(err)) from None
    client = await connect(args.profile)
    accepted = await request_cancel(client, args.order_id, request.reason)
    await _follow(client, accepted, args)


async def _resolve(args: argparse.Namespace) -> None:
    try:
        request = ResolveRequest(action=OperatorAction(args.action), reason=args.reason)
    except ValidationError as err:
        raise InputError("the decision is invalid:\n" + _describe(err)) from None
    client = await connect(args.profile)
    accepted = await request_resolve(client, args.order_id, request)
    await _follow(client, accepted, args)


_UNDER_WAY = {
    OperatorAction.CANCEL.value: "winding down (refund, picklist, email)",
    OperatorAction.RETRY.value: "running the refused step again",
    OperatorAction.RETRY_PAYMENT.value: "charging again with the same idempotency keys",
}


async def _follow(client: Client, accepted: AcceptedRequest, args: argparse.Namespace) -> None:
    """Say at once that the order accepted, then show its progress until it is done."""
    # Flushed line by line: whoever reads a pipe sees the acceptance before the wind-down ends.
    under_way = _UNDER_WAY.get(accepted.action)
    print(
        f"order {accepted.order_id}: {accepted.action} accepted"
        + (f"; {under_way}" if under_way else ""),
        flush=True,
    )
    if args.no_wait:
        return
    view = await follow_order(
        client, accepted.order_id, accepted.outcome(), _print_progress, within=args.timeout
    )
    _print_view(view)


def _print_progress(view: OrderView) -> None:
    step = ""
    if view.timeline:
        latest = view.timeline[-1]
        step = f": {latest.step.value} {latest.state.value}"
        if latest.detail and latest.state != StepState.STARTED:
            step += f" ({latest.detail})"
    print(f"  {view.status.value}{step}", flush=True)


async def _status(args: argparse.Namespace) -> None:
    client = await connect(args.profile)
    view = await order_status(client, args.order_id)
    if view.dispute is None:  # an order that had ended when its payment was disputed
        view = view.model_copy(update={"dispute": await order_dispute(client, args.order_id)})
    if args.json:
        print(view.model_dump_json(indent=2))
    else:
        _print_view(view)


async def _list(args: argparse.Namespace) -> None:
    client = await connect(args.profile)
    status = OrderStatus(args.status) if args.status else None
    count = 0
    async for order in list_orders(client, status, args.limit):
        started = f"{order.started_at:%Y-%m-%d %H:%M:%S}" if order.started_at else "-"
        print(f"{order.order_id:<30} {order.status:<18} {order.customer_id:<20} {started}")
        count += 1
    if count == 0:
        print("no orders" + (f" with status {status.value}" if status else ""))


async def _intake(args: argparse.Namespace) -> None:
    client = await connect(args.profile)
    if args.intake_command == "pause":
        status = await pause_intake(client, args.reason)
        print(f"intake paused by an operator: {status.reason}")
        print("  new orders are refused until: starter.py intake resume; orders placed carry on")
        return
    if args.intake_command == "resume":
        was_paused = (await intake_status(client)).paused
        status = await resume_intake(client, args.reason)
        print("intake open: taking new orders" if was_paused else "intake was already open")
        return
    status = await intake_status(client)
    if args.json:
        print(status.model_dump_json(indent=2))
    else:
        _print_intake(status)


def _print_intake(status: IntakeStatus) -> None:
    if not status.paused:
        print("intake open: taking new orders")
        if status.since and status.by:
            print(f"  since        {status.since:%Y-%m-%d %H:%M:%S %Z}, by the {status.by}")
            print(f"  reason       {status.reason}")
        return
    print(status.headline())
    print(f"  task queue   {status.task_queue}")
    if status.paused_at and status.paused_at != status.since:
        print(f"  paused at    {status.paused_at:%Y-%m-%d %H:%M:%S %Z}")
    if status.evidence and status.evidence.last_failure:
        print(f"  last failure {status.evidence.last_failure}")
    if status.mode == IntakeMode.PAUSED_BY_BREAKER and status.policy is not None:
        policy = status.policy
        if policy.auto_close:
            print(f"  auto-close   on: {status.healthy_streak} of {policy.healthy_probes} healthy "
                  f"probes in a row, one every {human(policy.probe_interval)}")  # fmt: skip
        else:
            print("  auto-close   off: an operator resumes intake")
    if status.last_probe is not None:
        probe = status.last_probe
        health = "healthy" if probe.healthy else "unhealthy"
        print(f"  last probe   {probe.at:%H:%M:%S} {health}: {probe.detail}")
    print("  resume with: starter.py intake resume --reason TEXT")


COMMANDS: dict[str, Callable[[argparse.Namespace], Coroutine[object, object, None]]] = {
    "start": _start,
    "ship": _ship,
    "cancel": _cancel,
    "resolve": _resolve,
    "status": _status,
    "list": _list,
    "intake": _intake,
}


def main(argv: list[str] | None = None) -> int:
    """Run one command and return its exit code; user mistakes never print a traceback."""
    args = _parser().parse_args(argv)
    tracing.configure("orders-starter")  # only if OTEL_* variables ask for it
    try:
        asyncio.run(_traced(args))
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INVALID_INPUT
    except OrderStillRunning as err:  # not an error: the order goes on without us
        print(err, file=sys.stderr)
        return err.exit_code
    except OrderError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except TemporalConnectionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if args.command in ("cancel", "resolve"):
            print(
                f"stopped waiting; order {args.order_id} goes on with what it accepted: "
                f"starter.py status {args.order_id}",
                file=sys.stderr,
            )
        return 130
    finally:
        tracing.shutdown()  # exit_now skips OpenTelemetry's exit hook: send the spans now
    return 0


async def _traced(args: argparse.Namespace) -> None:
    """Run the command in one span, the root of the trace of all it sets going."""
    attributes = {"command": args.command}
    if getattr(args, "order_id", None):
        attributes["order.id"] = args.order_id
    with tracing.span(f"starter.py {args.command}", attributes):
        await COMMANDS[args.command](args)


if __name__ == "__main__":
    try:
        status = main()
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly, as cat does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        status = 141
    except Exception:  # a bug, not a user mistake: show it, and still exit non-zero
        traceback.print_exc()
        status = 1
    exit_now(status)
