"""Serve solve requests in batches: the batcher, the queue port (in-process and RabbitMQ), the worker.

Imports only ``routing_core`` and ``gnn_model`` of our packages (never ``routing_api``).
Nothing heavy happens at import time: connections and threads start in ``start()`` /
``run_worker``.
"""

from batch_worker.errors import DeadlineExceeded, QueueFull, QueueUnavailable

__all__ = ["DeadlineExceeded", "QueueFull", "QueueUnavailable"]
