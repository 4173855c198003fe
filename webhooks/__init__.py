"""The warehouse's shipment webhooks: the event, its signature, and the receiver.

- ``webhooks/events.py``: the event the warehouse sends (``shipment.shipped``).
- ``webhooks/signature.py``: the ``Warehouse-Signature`` header, signed and verified.
- ``webhooks/handoff.py``: one event handed to its order (a Workflow Update), and the answer.
- ``webhooks/app.py``: the receiver (``POST /webhooks/warehouse``, ``/metrics``, ``/healthz``).
- ``webhooks/__main__.py``: ``python -m webhooks`` runs it.

The sender is the sandbox warehouse's outbox, ``providers/webhooks.py``; the settings both
sides read are in ``orders/config/webhooks.py``.
"""
