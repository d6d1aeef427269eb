"""The worker's Kafka clients (worker/edges/clients.py): settings and the output topics' metadata fetched ahead."""

from __future__ import annotations

import threading

from kafka.errors import KafkaTimeoutError

from worker.edges.clients import KafkaClients, client_configs
from worker.edges.config import WorkerConfig, load_config


def test_the_output_topics_metadata_is_fetched_ahead_and_a_missing_topic_is_left_to_the_first_send():
    asked: list[str] = []
    done = threading.Event()

    class Producer:
        def partitions_for(self, topic):
            asked.append(topic)
            if topic == "transactions-dlq":
                raise KafkaTimeoutError("no such topic yet")
            if len(asked) == 3:
                done.set()
            return {0}

    KafkaClients(WorkerConfig(scores_topic="fraud-scores")).learn_topics(Producer())
    assert done.wait(5)
    assert asked == ["fraud-alerts", "transactions-dlq", "fraud-scores"]


def test_passed_through_settings_reach_each_client_and_the_workers_own_stay():
    config = load_config(["--kafka-option", "request_timeout_ms=12345", "--kafka-option", "linger_ms=7"], {})
    consumer, producer = client_configs(config)
    assert consumer["request_timeout_ms"] == 12345 and producer["request_timeout_ms"] == 12345
    assert producer["linger_ms"] == 7 and "linger_ms" not in consumer
    assert consumer["enable_auto_commit"] is False and producer["acks"] == "all"
