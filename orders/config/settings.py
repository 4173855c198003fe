"""Settings read from the environment, with defaults for the embedded local stack."""

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

TASK_QUEUE = os.environ.get("ORDERS_TASK_QUEUE", "orders")
"""The task queue the order workflow and its activities run on."""

DEFAULT_TEMPORAL_ADDRESS = "localhost:7233"
DEFAULT_PROVIDERS_URL = "http://127.0.0.1:8000"
DEFAULT_PROVIDERS_API_KEY = "sk_test_sandbox"


STRIPE_API_BASE = "https://api.stripe.com"
"""Stripe itself: where the payment activities go when a Stripe secret key and no gateway
address are configured."""


@dataclass(frozen=True)
class ProviderSettings:
    """How workers reach the payment gateway, mail service and warehouse.

    The gateway speaks Stripe's API: the sandbox's ``/v1`` by default, Stripe itself (test or
    live mode, by the key) when ``STRIPE_API_KEY`` is set and ``STRIPE_API_BASE`` is not.
    """

    base_url: str = DEFAULT_PROVIDERS_URL
    api_key: str = DEFAULT_PROVIDERS_API_KEY
    gateway_url: str | None = None
    """Where the payment gateway's Stripe API is (``None``: the sandbox at ``base_url``)."""
    gateway_key: str | None = None
    """The gateway's secret key (``None``: ``api_key``, the sandbox's)."""
    request_timeout_seconds: float = 4.0
    """Below the activities' start-to-close timeout, so a slow call fails as a retryable
    transport error in the activity rather than as an activity timeout."""

    @property
    def gateway(self) -> tuple[str, str]:
        """The payment gateway's address and secret key."""
        return self.gateway_url or self.base_url, self.gateway_key or self.api_key

    @classmethod
    def from_env(cls) -> "ProviderSettings":
        """Read ``PROVIDERS_URL``/``_API_KEY`` and ``STRIPE_API_KEY``/``STRIPE_API_BASE``."""
        stripe_key = os.environ.get("STRIPE_API_KEY") or None
        stripe_base = os.environ.get("STRIPE_API_BASE") or None
        return cls(
            base_url=os.environ.get("PROVIDERS_URL", DEFAULT_PROVIDERS_URL),
            api_key=os.environ.get("PROVIDERS_API_KEY", DEFAULT_PROVIDERS_API_KEY),
            gateway_url=stripe_base or (STRIPE_API_BASE if stripe_key else None),
            gateway_key=stripe_key,
        )


PAYMENT_RETURN_URL_ENV = "ORDERS_PAYMENT_RETURN_URL"
ORDER_ID_FIELD = "{order_id}"


def ui_order_page(ui_port: int) -> str:
    """The order's page in the local stack's Temporal Web UI on ``ui_port``, as a template."""
    return f"http://localhost:{ui_port}/namespaces/default/workflows/{ORDER_ID_FIELD}"


DEFAULT_PAYMENT_RETURN_URL = ui_order_page(8233)
"""The local stack's page of the order (its Temporal Web UI): something to come back to with
``./scripts/run`` (which names its own UI port); a shop sets its own customer page."""


class ReturnUrlError(Exception):
    """The payment return URL setting is not usable; the message says why."""


@dataclass(frozen=True)
class PaymentReturnUrl:
    """Where the bank's 3-D Secure page sends the customer back (Stripe's ``return_url``).

    The worker's confirm names it: Stripe refuses a confirm without one for an intent with
    automatic payment methods (the default since API version 2023-08-16), and answers a
    3-D Secure card with a link for the customer (``redirect_to_url``) only when it is named.
    ``{order_id}`` in it is replaced by the order's id (URL-encoded).
    """

    template: str = DEFAULT_PAYMENT_RETURN_URL

    def for_order(self, order_id: str) -> str:
        """The URL for this order's customer."""
        return self.template.replace(ORDER_ID_FIELD, quote(order_id, safe=""))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "PaymentReturnUrl":
        """Read ``ORDERS_PAYMENT_RETURN_URL`` (unset or empty: the default).

        Raises ``ReturnUrlError`` for anything but an absolute http(s) URL whose only
        placeholder is ``{order_id}``.
        """
        env = os.environ if env is None else env
        text = env.get(PAYMENT_RETURN_URL_ENV, "").strip()
        if not text:
            return cls()
        problem = _return_url_problem(text)
        if problem:
            raise ReturnUrlError(f"{PAYMENT_RETURN_URL_ENV}={text!r}: {problem}")
        return cls(text)


def _return_url_problem(text: str) -> str | None:
    """Why ``text`` cannot be the return URL, or None if it can."""
    try:
        parts = urlsplit(text.replace(ORDER_ID_FIELD, "order"))
        parts.port  # noqa: B018 (a port that is not a number raises here)
    except ValueError as err:
        return f"not a URL ({err})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return (
            "give an absolute http:// or https:// URL, e.g. https://shop.example/orders/{order_id}"
        )
    if "{" in parts.geturl() or "}" in parts.geturl():
        return "the only placeholder it may hold is {order_id}"
    if any(char.isspace() for char in text):
        return "a URL has no spaces"
    return None


class CapacityError(Exception):
    """A worker capacity setting is not a usable number; the message says which and why."""


@dataclass(frozen=True)
class WorkerCapacity:
    """How much work one worker process takes on at once; the rest waits at Temporal.

    One Python process runs every workflow task and activity on one core. Taking more at once
    does not finish more: each task just takes longer, until tasks near their timeouts. With
    these bounds the worker polls only when a slot is free, so under overload the queue grows
    at Temporal (where any worker can take it) instead of inside one process.
    """

    workflow_tasks: int = 30
    """A task that runs a local-first step waits inside the task for the provider's answer,
    holding its slot without using the core: with 10 slots, the real order ran at 0.78 of the
    ceiling's rate at 50 in flight (14.8 orders/s), with 30 at 0.95 (18.6/s; the longest task
    215 ms). See docs/speed.md."""
    activities: int = 20
    local_activities: int = 20
    cached_workflows: int = 500
    """Orders kept in memory between their workflow tasks (about 0.2 MB each); the rest replay
    their history when they next move. An order runs its steps in seconds and then waits days
    for the warehouse, long past any cache, so a few hundred cover the orders that are moving."""

    @classmethod
    def from_env(cls) -> "WorkerCapacity":
        """Read the ``ORDERS_WORKER_*`` variables (docs/architecture.md); unset ones: defaults."""
        default = cls()
        return cls(
            workflow_tasks=_slots("ORDERS_WORKER_WORKFLOW_TASKS", default.workflow_tasks, 2),
            activities=_slots("ORDERS_WORKER_ACTIVITIES", default.activities, 1),
            local_activities=_slots("ORDERS_WORKER_LOCAL_ACTIVITIES", default.local_activities, 1),
            cached_workflows=_slots("ORDERS_WORKER_CACHED_WORKFLOWS", default.cached_workflows, 0),
        )


def _slots(name: str, default: int, least: int) -> int:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    if not text.isdigit() or not least <= int(text) <= 10_000:
        raise CapacityError(f"{name}={text!r}: give a whole number from {least} to 10000")
    return int(text)


VERSIONING_ENV = "ORDERS_WORKER_VERSIONING"
DEPLOYMENT_NAME_ENV = "ORDERS_DEPLOYMENT_NAME"
BUILD_ID_ENV = "ORDERS_BUILD_ID"
DEFAULT_DEPLOYMENT_NAME = "orders"
CONTROLLER_DEPLOYMENT_NAME_ENV = "TEMPORAL_DEPLOYMENT_NAME"
CONTROLLER_BUILD_ID_ENV = "TEMPORAL_WORKER_BUILD_ID"
"""Set by Temporal's Worker Controller in the pods of each version it runs (deploy/k8s/worker.yaml,
never by hand). They win over ``ORDERS_DEPLOYMENT_NAME`` and ``ORDERS_BUILD_ID``: the controller
registers, routes and retires exactly that version, so a worker polling as another one would
never be made current."""

BUILD_SOURCES = (
    "worker.py",
    "activities",
    "orders/client",
    "orders/config",
    "orders/domain",
    "orders/intake",
    "orders/security",
    "orders/telemetry",
    "orders/workflow_runner.py",
    "workflows",
)
"""What a worker runs: its default build id is a hash of these files' Python sources."""

_ON = ("on", "true", "1", "yes")
_OFF = ("off", "false", "0", "no", "")


class VersioningError(Exception):
    """A Worker Versioning setting is not usable; the message says which and why."""


def source_build_id(root: Path | None = None) -> str:
    """``src-`` and 12 hex digits of a SHA-256 over the worker's Python sources.

    ``root`` defaults to the repository root. (Resolved here, not at import: workflow modules
    import this one inside the workflow sandbox, which forbids resolving paths.)

    The same sources give the same id on every machine and in every image (no git needed);
    any change to workflow, activity or domain code gives a new one. Bytecode, tests and the
    sandbox providers do not count.
    """
    root = root or Path(__file__).resolve().parents[2]
    digest = hashlib.sha256()
    for top in BUILD_SOURCES:
        path = root / top
        files = [path] if path.is_file() else sorted(path.rglob("*.py"))
        for file in files:
            digest.update(file.relative_to(root).as_posix().encode() + b"\0")
            digest.update(file.read_bytes() + b"\0")
    return f"src-{digest.hexdigest()[:12]}"


@dataclass(frozen=True)
class WorkerVersioning:
    """Which Worker Deployment Version a worker declares, and whether versioning is on.

    With versioning on, Temporal sends a worker only the tasks of its version: new orders and
    auto-upgrading orders go to the deployment's *current* version, which someone (a deploy
    step, ``temporal worker deployment set-current-version``, or the local stack) must set.
    Off (the default), the worker polls unversioned, as before: any worker takes any task.
    """

    enabled: bool = False
    deployment_name: str = DEFAULT_DEPLOYMENT_NAME
    build_id: str = field(default_factory=source_build_id)

    @property
    def version(self) -> str:
        """The version as Temporal prints it: ``<deployment name>.<build id>``."""
        return f"{self.deployment_name}.{self.build_id}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "WorkerVersioning":
        """Read ``ORDERS_WORKER_VERSIONING``, ``ORDERS_DEPLOYMENT_NAME``, ``ORDERS_BUILD_ID``.

        In a pod of Temporal's Worker Controller, its ``TEMPORAL_DEPLOYMENT_NAME`` and
        ``TEMPORAL_WORKER_BUILD_ID`` give the version instead, and versioning must be on.
        """
        env = os.environ if env is None else env
        switch = env.get(VERSIONING_ENV, "").strip().lower()
        if switch not in _ON + _OFF:
            raise VersioningError(f"{VERSIONING_ENV}={switch!r}: give on or off")
        if env.get(CONTROLLER_BUILD_ID_ENV, "").strip() and switch not in _ON:
            raise VersioningError(
                f"{CONTROLLER_BUILD_ID_ENV} is set (the Worker Controller runs this worker as a "
                f"version), but {VERSIONING_ENV} is off: set {VERSIONING_ENV}=on"
            )
        name_env, name = _first_set(env, CONTROLLER_DEPLOYMENT_NAME_ENV, DEPLOYMENT_NAME_ENV)
        name = name or DEFAULT_DEPLOYMENT_NAME
        if "." in name:
            raise VersioningError(
                f"{name_env}={name!r}: a deployment name cannot contain '.' "
                "(Temporal writes a version as <deployment name>.<build id>)"
            )
        build_id_env, build_id = _first_set(env, CONTROLLER_BUILD_ID_ENV, BUILD_ID_ENV)
        build_id = build_id or source_build_id()
        if len(build_id) > 255:
            raise VersioningError(f"{build_id_env}: at most 255 characters, not {len(build_id)}")
        return cls(enabled=switch in _ON, deployment_name=name, build_id=build_id)


def _first_set(env: Mapping[str, str], *names: str) -> tuple[str, str]:
    """The first of these variables that is set (and its value), else the last name and ``""``."""
    for name in names:
        if value := env.get(name, "").strip():
            return name, value
    return names[-1], ""
