"""Wait until a consumer knows its input topic's partitions, so its first poll's group join assigns them.

kafka-python joins the group on the first poll, whether or not the subscription's metadata has
arrived. Before it has, the group's leader assigns nothing ("No partition metadata") and rejoins
only once a later metadata update shows the partitions; twice in a row a worker in the tests then
sat with no partitions until the next periodic refresh (5 minutes by default).

``await_partitions`` (the fast path) asks for the subscribed topics alone and gives up after
``timeout_ms``. It uses kafka-python internals: ``KafkaConsumer._cluster`` (``partitions_for_topic``,
``request_update``), ``_net.run`` and ``_manager.wait_for``. A refresh already in flight when
subscribe() ran answers the update asked for without the topic; the loop then asks again. A topic
that does not exist (yet) ends the wait at once: kafka-python keeps asking for it, and the group
rebalances when it appears.

``await_partitions_plain`` is the fallback on kafka-python's public API: ``partitions_for_topic``
fetches every topic of the cluster and waits without a bound, so it runs on a side thread and the
wait ends after ``timeout_ms`` all the same.
"""

from __future__ import annotations

import logging
import threading
import time

from kafka import KafkaConsumer
from kafka.errors import KafkaError, KafkaTimeoutError

from worker.kafka_compat.counters import TAKEN

logger = logging.getLogger(__name__)


def check_metadata(consumer: KafkaConsumer) -> None:
    """Raise unless every internal ``await_partitions`` uses is there."""
    cluster = consumer._cluster
    for owner, name in ((cluster, "partitions_for_topic"), (cluster, "request_update"),
                        (consumer._net, "run"), (consumer._manager, "wait_for")):  # fmt: skip
        if not callable(getattr(owner, name, None)):
            raise TypeError(f"kafka-python's {type(owner).__name__}.{name} is gone")


def await_partitions(consumer: KafkaConsumer, topic: str, timeout_ms: int) -> None:
    """Wait at most ``timeout_ms`` for ``topic``'s partitions, asking for that topic's metadata alone."""
    TAKEN["metadata_wait"] += 1
    cluster = consumer._cluster
    deadline = time.monotonic() + timeout_ms / 1000
    while cluster.partitions_for_topic(topic) is None:
        left_ms = (deadline - time.monotonic()) * 1000
        if left_ms <= 0:
            logger.warning("no metadata for %s after %d ms; the group join goes ahead without it", topic, timeout_ms)
            return
        try:
            consumer._net.run(consumer._manager.wait_for, cluster.request_update(), left_ms)
        except KafkaTimeoutError:
            continue
        except KafkaError as exc:  # the topic does not exist (yet), or the broker did not answer
            logger.info("metadata for %s not fetched before joining the group: %s", topic, exc)
            return


def await_partitions_plain(consumer: KafkaConsumer, topic: str, timeout_ms: int) -> None:
    """The same wait on kafka-python's public API: one ``partitions_for_topic`` call, on a side thread."""
    done = threading.Event()

    def ask() -> None:
        try:
            consumer.partitions_for_topic(topic)
        except Exception as exc:  # noqa: BLE001 - only a head start: the group join reports real trouble
            logger.info("metadata for %s not fetched before joining the group: %s", topic, exc)
        finally:
            done.set()

    threading.Thread(target=ask, name="fraud-metadata", daemon=True).start()
    if not done.wait(timeout_ms / 1000):
        logger.warning("no metadata for %s after %d ms; the group join goes ahead without it", topic, timeout_ms)
