"""The warehouse's shipment webhooks: the event, its signature, and the receiver.

- ``orders/webhooks/events.py``: the event the warehouse sends (``shipment.shipped``).
- ``orders/webhooks/signature.py``: the ``Warehouse-Signature`` header, signed and verified.
- ``orders/webhooks/handoff.py``: one event handed to its order (a Workflow Update), and the answer.
- ``orders/webhooks/app.py``: the receiver (``POST /webhooks/warehouse``, ``/metrics``,
  ``/healthz``).
- ``orders/webhooks/__main__.py``: ``python -m orders.webhooks`` runs it.

The sender is the sandbox warehouse's outbox, ``sandbox/webhooks.py``; the settings both
sides read are in ``orders/config/webhooks.py``.
"""
