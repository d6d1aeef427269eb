"""Operator tools: each runs with the worker's base install only (no TensorFlow, no ``training``).

- ``topics``: ``fraud-worker create-topics``, create the worker's topics, idempotently;
- ``reconcile``: ``fraud-worker reconcile``, account for every input record (scored or dead-lettered);
- ``tail``: ``fraud-worker tail-alerts``, print alerts as they arrive, one line each;
- ``backtest``: ``fraud-worker backtest``, score a file of events offline through the worker's own
  decode, scoring and output code (``backtest_metrics``: its label metrics and PR curve);
- ``replay``: ``fraud-replay``, produce transactions from a CSV or the synthetic generator;
- ``synthetic``: that seeded generator (the training job imports it from here).

Each reads its Kafka settings, topic names and bootstrap servers from ``worker.config``, through
``settings.parse_settings``: the same flags, ``FRAUD_*`` variables and ``--kafka-option`` /
``FRAUD_KAFKA_*`` pass-through as the worker.
"""
