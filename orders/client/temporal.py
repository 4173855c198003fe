"""The one place that builds a Temporal client: worker, starter, tests and tools all use it.

Connection settings come from Temporal's standard client configuration (``temporalio.envconfig``:
``TEMPORAL_ADDRESS``, ``TEMPORAL_NAMESPACE``, ``TEMPORAL_API_KEY``, TLS settings, or a profile in
the config file), so the same code reaches the local dev server, a cluster or Temporal Cloud.

Every payload is encrypted (``orders.security.codec``); the keys reach the converter as described in
``orders.security.keys``: ``ORDERS_CODEC_KEYS``, ``ORDERS_CODEC_KEY_FILE``, or the local stack's
generated key file, read once per process on first use. ``connect`` reads them before it
connects, so a process without keys stops at once with a message that says how to set them.
"""

import dataclasses
import os
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client, Interceptor
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes
from temporalio.envconfig import ClientConfig
from temporalio.runtime import Runtime
from temporalio.service import RPCError

from orders.config.settings import DEFAULT_TEMPORAL_ADDRESS
from orders.domain import search_attributes
from orders.security.codec import EncryptionCodec
from orders.security.keys import KeyConfigError, KeyRing, load_key_ring

CODEC = EncryptionCodec(load_key_ring)
"""AES-256-GCM over every payload; its keys are loaded on first use, once per process."""

DATA_CONVERTER = dataclasses.replace(
    pydantic_data_converter,
    payload_codec=CODEC,
    # Failure messages and stack traces go into an encoded (so encrypted) payload too.
    failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
)
"""The project's data converter: pydantic models cross the workflow boundary typed, and every
payload (inputs, results, signals, updates, queries, memo, summaries, failure messages) is
encrypted. Everything that talks to Temporal (clients, workers, test environments, the replayer)
takes it from here. Payloads not marked encrypted (histories recorded before encryption) decode
as they are."""


ACCEPT_TIMEOUT = timedelta(seconds=10)
"""How long a cancel, resolve or resume waits for a worker to accept or refuse it."""


class TemporalConnectionError(Exception):
    """Temporal could not be reached or the client configuration is wrong."""


class CodecKeyError(TemporalConnectionError):
    """No usable payload encryption key: the message says how to set one."""


def codec_keys() -> KeyRing:
    """The process's encryption keys, loaded once; ``CodecKeyError`` says how to set them."""
    try:
        return CODEC.key_ring()
    except KeyConfigError as err:
        raise CodecKeyError(str(err)) from err


def data_converter() -> DataConverter:
    """``DATA_CONVERTER`` once its keys are loaded, so a missing key fails here, clearly."""
    codec_keys()
    return DATA_CONVERTER


def connect_config(profile: str | None = None) -> dict[str, Any]:
    """Load the client configuration, defaulting to the local dev server.

    A profile (``profile``, else ``TEMPORAL_PROFILE``, else ``default``) comes from the TOML
    file at ``TEMPORAL_CONFIG_FILE`` (default ``~/.config/temporalio/temporal.toml``); the
    ``TEMPORAL_*`` variables override it. Certificate and key files are read here, so a
    missing one is reported before any connection is tried.
    """
    try:
        config: dict[str, Any] = dict(ClientConfig.load_client_connect_config(profile=profile))
    except Exception as err:  # the SDK raises ConfigError and OS errors for bad files
        hint = "" if isinstance(err, OSError) else _config_file_hint()  # OS errors name the file
        raise TemporalConnectionError(
            f"Temporal client configuration is invalid: {err}{hint}. Check TEMPORAL_PROFILE, "
            "TEMPORAL_CONFIG_FILE and the TEMPORAL_* environment variables."
        ) from err
    config.setdefault("target_host", DEFAULT_TEMPORAL_ADDRESS)
    return config


def _config_file_hint() -> str:
    """Where profiles were looked for, and which exist there: an unknown profile's context."""
    configured = os.environ.get("TEMPORAL_CONFIG_FILE")
    config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    path = Path(configured or Path(config_home) / "temporalio" / "temporal.toml")
    if not path.is_file():
        return f" (there is no config file at {path})"
    try:
        names = sorted(ClientConfig.load(config_source=path).profiles)
    except Exception:  # the error itself says what is wrong with the file
        return ""
    return f" (profiles in {path}: {', '.join(names) or 'none'})"


async def connect(
    profile: str | None = None,
    address: str | None = None,
    *,
    runtime: Runtime | None = None,
    interceptors: Sequence[Interceptor] = (),
) -> Client:
    """Connect to Temporal with the project's data converter.

    ``address`` (a stack this process started itself) bypasses the client configuration.
    ``runtime`` (one per process, e.g. serving Prometheus metrics, ``orders.telemetry.metrics``) and
    ``interceptors`` (tracing, ``orders.telemetry.tracing``) also apply to workers built on the
    client.
    """
    config = {"target_host": address} if address else connect_config(profile)
    converter = data_converter()
    try:
        return await Client.connect(
            **config, data_converter=converter, runtime=runtime, interceptors=interceptors
        )
    except (RuntimeError, RPCError) as err:
        raise TemporalConnectionError(
            f"cannot reach Temporal at {config['target_host']} "
            f"(namespace {config.get('namespace', 'default')}): {err}. "
            "Is the server running? Start the local stack with ./scripts/run, or set "
            "TEMPORAL_ADDRESS."
        ) from err


async def register_search_attributes(client: Client) -> None:
    """Register the orders' search attributes on the client's namespace.

    The dev server gets them as start-up flags; use this for servers started without them
    (such as the time-skipping test server). On Temporal Cloud, add them in the namespace's
    settings instead.
    """
    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=client.namespace,
            search_attributes={
                key.name: IndexedValueType.ValueType(key.indexed_value_type)
                for key in search_attributes.ALL
            },
        )
    )
