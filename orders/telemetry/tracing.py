"""OpenTelemetry tracing: one trace per order request, from the starter to the providers.

Off by default: no tracer provider is installed, no interceptor is added, and the few spans the
code opens are the API's no-op spans. It is turned on by the standard variables:

- ``OTEL_TRACES_EXPORTER``: ``otlp``, ``console`` (to stderr) or ``none``, comma-separated;
  when unset, ``otlp`` if an OTLP endpoint is set, else ``none``.
- ``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``: the collector, over
  OTLP/HTTP with protobuf (``http://localhost:4318``; the gRPC protocol is not installed).
- ``OTEL_SERVICE_NAME`` (default: ``orders-worker``, ``orders-starter``, ``orders-providers``),
  ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_SDK_DISABLED=true``, ``OTEL_BSP_*``.

A program that installs its own tracer provider first (the tests do) gets tracing with it.
"""

import logging
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.util.types import AttributeValue
from temporalio.client import Interceptor

if TYPE_CHECKING:  # the SDK is imported only when tracing is configured
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

logger = logging.getLogger("orders.telemetry")

_TRACER = "orders"
_installed: "TracerProvider | None" = None


def enabled() -> bool:
    """True when a real tracer provider is installed (by ``configure`` or by the program)."""
    provider = trace.get_tracer_provider()
    return not isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)


def configure(default_service_name: str) -> bool:
    """Install a tracer provider as the ``OTEL_*`` variables say; True if tracing is on.

    Does nothing when tracing is not configured or a provider is already installed.
    """
    global _installed
    if enabled():
        return True
    exporters = _exporters_from_env()
    if not exporters:
        return False
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SimpleSpanProcessor,
    )

    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: default_service_name}
    provider = TracerProvider(resource=Resource.create(attributes))
    for exporter in exporters:
        simple = isinstance(exporter, ConsoleSpanExporter)
        provider.add_span_processor(
            SimpleSpanProcessor(exporter) if simple else BatchSpanProcessor(exporter)
        )
    trace.set_tracer_provider(provider)
    _installed = provider
    return True


def shutdown() -> None:
    """Flush the spans of the provider ``configure`` installed (call before the process exits).

    The processes leave with ``os._exit`` (see ``orders.client.exit``), which skips
    OpenTelemetry's own
    exit hook, so the last spans are sent here or never.
    """
    global _installed
    if _installed is not None:
        _installed.shutdown()
        _installed = None


def client_interceptors() -> Sequence[Interceptor]:
    """The Temporal client's tracing interceptor when tracing is on; none when it is off.

    On a client, it traces starts, signals, queries and updates; workers built on that client
    trace the workflow and its activities under the same trace.
    """
    if not enabled():
        return []
    from temporalio.contrib.opentelemetry import TracingInterceptor

    return [TracingInterceptor()]


@contextmanager
def span(name: str, attributes: Mapping[str, AttributeValue] | None = None) -> Iterator[None]:
    """Run the block in a span named ``name`` (a no-op span when tracing is off)."""
    with trace.get_tracer(_TRACER).start_as_current_span(name, attributes=attributes):
        yield


def _exporters_from_env() -> "list[SpanExporter]":
    env = os.environ.get
    if env("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    endpoint = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env("OTEL_EXPORTER_OTLP_ENDPOINT")
    names = env("OTEL_TRACES_EXPORTER") or ("otlp" if endpoint else "none")
    exporters: list[SpanExporter] = []
    for name in (part.strip().lower() for part in names.split(",")):
        if name in ("", "none"):
            continue
        if name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            exporters.append(ConsoleSpanExporter(out=sys.stderr))
        elif name == "otlp":
            exporters.append(_otlp_exporter())
        else:
            logger.warning("OTEL_TRACES_EXPORTER=%s: unknown exporter %r ignored", names, name)
    return exporters


def _otlp_exporter() -> "SpanExporter":
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )
    if protocol != "http/protobuf":
        logger.warning("OTLP protocol %r is not installed; sending http/protobuf", protocol)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()
