"""``fraud-feedback``: fraud caught and false alarms on live traffic, per model version, from late labels.

The worker's score records (the scores topic) and the labels (the labels topic, default
``fraud-labels``), both keyed by ``transaction_id`` and co-partitioned, are joined per partition in
an embedded SQLite store that survives restarts (one file per partition under ``--state-dir``).

    records.py   pure: score and label records decoded and checked
    quality.py   pure: the outcome of a scored transaction; precision, recall, average precision
    store.py     one partition's store: the join, the outcome counts, entity fraud entries, expiry, pruning, offsets
    consumer.py  the Kafka side: a consumer group over both topics, stores opened per assignment, the
                 entity fraud entries published to the entity risk topic
    metrics.py   the Prometheus metrics, set from the stores
    export.py    the labelled examples as a CSV that ``fraud-train`` reads
The program itself (``fraud-feedback`` and ``fraud-feedback export``) is worker/programs/fraud_feedback.py.
"""
