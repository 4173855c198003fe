"""Metrics and tracing shared by the worker, the starter and the providers.

``names`` lists every business metric the project exports, ``metrics`` sets up the worker's
Prometheus endpoint (the SDK's own metrics and the business metrics recorded through its
replay-safe meters), ``tracing`` sets up OpenTelemetry tracing from the standard ``OTEL_*``
variables (off by default) and carries the trace context over HTTP.
"""
