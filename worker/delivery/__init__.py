"""Delivery guarantees: how a scored batch's records reach Kafka and its offsets get committed.

``batch.py`` (a polled batch as it moves through), ``acks.py`` (the acknowledgement chain),
``committer.py`` (what is committed when), ``inflight.py`` (batches between send and commit),
``transactions.py`` (the exactly-once transaction), ``rebalance.py`` (the rebalance listener).
"""
