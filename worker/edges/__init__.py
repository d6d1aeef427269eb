"""The edges: settings, metrics, health probes, Kafka clients and access checks, logs.

Where the worker meets its operator and the outside: ``config.py`` (every setting), ``metrics.py``
(the Prometheus registry), ``health.py`` (probe state) and ``health_server.py`` (the HTTP server),
``clients.py`` and ``access.py`` (the Kafka clients and the cluster's refusals), ``credentials.py``
(secrets kept out of sight), ``logs.py``, ``trouble.py`` (report, back off, recover).
"""
