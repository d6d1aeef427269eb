"""fraud-feedback's entity risk on a real broker: score records that name their entities and labels go in,
the compacted entity risk topic (created by fraud-feedback) holds each entity's fraud entries per partition,
read back with a plain consumer; a restart on the same stores publishes nothing twice, and an entity whose
entries all fall past the risk horizon ends as a tombstone.

The score records are written straight to a co-partitioned scores topic (the worker's format with
``entity_time`` and ``entities``), so the test takes seconds.
"""

from __future__ import annotations

import time
from collections import defaultdict

import msgspec

from tests.conftest import KafkaClients, unique
from tests.support.feedback import FeedbackProcess, wait_totals
from tests.support.workers import produce
from worker.core.risk import decode_entries, parse_key
from worker.feedback.records import encode_label

PARTITIONS = 3
N = 120
TERMINALS = 4
FAST = ("--refresh-seconds", "0.5")
HOUR_MS = 3_600_000


def read_table(kafka: KafkaClients, topic: str) -> tuple[dict[tuple[str, int, str], list | None], int]:
    """The latest value of every key of the topic (None: a tombstone), and how many records it holds."""
    from kafka import TopicPartition

    consumer = kafka.consumer(group_id=None, enable_auto_commit=False)
    tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
    if not tps:  # not created yet
        consumer.close()
        return {}, 0
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    ends = consumer.end_offsets(tps)
    latest: dict[tuple[str, int, str], list | None] = {}
    n = 0
    deadline = time.monotonic() + 30
    while any(consumer.position(tp) < ends[tp] for tp in tps) and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            for r in records:
                latest[parse_key(r.key)] = None if r.value is None else decode_entries(r.value)
                n += 1
    consumer.close()
    return latest, n


def merged(latest: dict[tuple[str, int, str], list | None]) -> dict[tuple[str, str], list]:
    """Per entity, the entries of every partition together (as the workers' table merges them)."""
    out: dict[tuple[str, str], list] = defaultdict(list)
    for (field, _source, entity), entries in latest.items():
        out[(field, entity)] += entries or []
    return {k: sorted(v) for k, v in out.items() if v}


def cleanup_policy(kafka: KafkaClients, topic: str) -> str:
    from kafka.admin import ConfigResource, ConfigResourceType

    resource = ConfigResource(ConfigResourceType.TOPIC, topic, configs={"cleanup.policy": None})
    answer = kafka.admin().describe_configs([resource])
    return answer["topic"][topic]["cleanup.policy"]["value"]


def wait_table(kafka: KafkaClients, topic: str, expected: dict, fb: FeedbackProcess, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    got: dict = {}
    while time.monotonic() < deadline:
        if fb.proc.poll() is not None:
            raise AssertionError(f"fraud-feedback exited with {fb.proc.returncode}:\n{fb.output()[-3000:]}")
        latest, n = read_table(kafka, topic)
        got = merged(latest)
        if got == expected:
            return latest, n
        time.sleep(0.5)
    raise AssertionError(f"entity risk table {got}, expected {expected}\n{fb.output()[-3000:]}")


def test_the_entity_risk_topic_holds_each_entity_s_fraud_entries(kafka_bootstrap, feedbacks, tmp_path):
    kafka = KafkaClients(kafka_bootstrap)
    risk_topic = unique("entity-risk")
    kafka._topics.append(risk_topic)  # created by fraud-feedback, deleted with the others
    try:
        scores_topic = kafka.topic(partitions=PARTITIONS, prefix="scores")
        labels_topic = kafka.topic(partitions=PARTITIONS, prefix="labels")
        now = int(time.time() * 1000)
        t0 = now - 2 * HOUR_MS
        scores, labels = [], []
        expected_entries: dict[tuple[str, str], list] = defaultdict(list)
        outcomes = dict.fromkeys(("tp", "fp", "fn", "tn"), 0)
        for i in range(N):
            txn, terminal, tx_time = f"tx-{i}", f"t-{i % TERMINALS}", t0 + i * 1000
            entities = {"terminal_id": terminal, "customer_id": f"c-{i % 7}"}
            scores.append((txn.encode(), msgspec.json.encode({
                "transaction_id": txn, "score": 0.9, "threshold": 0.5, "model_version": "v1",
                "event_time": tx_time, "entity_time": tx_time, "entities": entities,
            })))  # fmt: skip
            fraud = i % 5 == 0
            label_time = tx_time + HOUR_MS
            labels.append((txn.encode(), encode_label(txn, fraud, label_time, "test")))
            outcomes["tp" if fraud else "fp"] += 1
            if fraud:
                for field, key in entities.items():
                    expected_entries[(field, key)].append((tx_time, label_time, 1))
        producer = kafka.producer(linger_ms=5)
        produce(producer, scores_topic, scores)
        produce(producer, labels_topic, labels)
        state, group = tmp_path / "state", unique("fb")
        extra = (*FAST, "--entity-risk-topic", risk_topic)
        fb = FeedbackProcess(kafka_bootstrap, scores_topic, labels_topic, group, state, extra).start()
        feedbacks.append(fb)
        wait_totals([fb], outcomes, timeout=60)
        wait_table(kafka, risk_topic, {k: sorted(v) for k, v in expected_entries.items()}, fb)

        # A fraud taken back by a later label: -1 for each of its entities, at the new label's time.
        corrected, tx_time = "tx-10", t0 + 10_000
        produce(producer, labels_topic, [(corrected.encode(), encode_label(corrected, False, tx_time + 2 * HOUR_MS,
                                                                           "chargeback"))])  # fmt: skip
        outcomes["tp"] -= 1
        outcomes["fp"] += 1
        for field, key in {"terminal_id": "t-2", "customer_id": "c-3"}.items():
            expected_entries[(field, key)].append((tx_time, tx_time + 2 * HOUR_MS, -1))
        wait_totals([fb], outcomes, timeout=60)
        latest, n = wait_table(kafka, risk_topic, {k: sorted(v) for k, v in expected_entries.items()}, fb)
        assert {source for _, source, _ in latest} <= set(range(PARTITIONS))
        assert fb.metric("fraud_feedback_entity_risk_records_total") == n
        assert fb.metric("fraud_feedback_entity_risk_errors_total") == 0
        assert cleanup_policy(kafka, risk_topic) == "compact"
        described = kafka.admin().describe_topics([risk_topic])
        assert len(described[0]["partitions"]) == PARTITIONS
        assert fb.stop() == 0

        # The same stores again: nothing is dirty, so nothing is published twice.
        fb = FeedbackProcess(kafka_bootstrap, scores_topic, labels_topic, group, state, extra).start()
        feedbacks.append(fb)
        wait_totals([fb], outcomes, timeout=60)
        time.sleep(2)
        assert read_table(kafka, risk_topic) == (latest, n)
        assert fb.metric("fraud_feedback_entity_risk_records_total") == 0
        assert fb.stop() == 0
    finally:
        kafka.close()


def test_entries_past_the_risk_horizon_end_as_a_tombstone(kafka_bootstrap, feedbacks, tmp_path):
    kafka = KafkaClients(kafka_bootstrap)
    risk_topic = unique("entity-risk")
    kafka._topics.append(risk_topic)  # created by fraud-feedback, deleted with the others
    try:
        scores_topic = kafka.topic(partitions=1, prefix="scores")
        labels_topic = kafka.topic(partitions=1, prefix="labels")
        now = int(time.time() * 1000)
        old, recent = now - 5 * HOUR_MS, now - 60_000
        records = [("old", old, "t-old"), ("recent", recent, "t-new")]
        scores = [(txn.encode(), msgspec.json.encode({
            "transaction_id": txn, "score": 0.9, "threshold": 0.5, "model_version": "v1", "event_time": t,
            "entity_time": t, "entities": {"terminal_id": terminal},
        })) for txn, t, terminal in records]  # fmt: skip
        labels = [(txn.encode(), encode_label(txn, True, now - 30_000, "test")) for txn, _, _ in records]
        producer = kafka.producer(linger_ms=5)
        produce(producer, labels_topic, labels)
        produce(producer, scores_topic, scores[:1])  # the old one first: published before a newer event prunes it
        extra = (*FAST, "--entity-risk-topic", risk_topic, "--risk-horizon", "1h")
        fb = FeedbackProcess(kafka_bootstrap, scores_topic, labels_topic, unique("fb"), tmp_path / "state",
                             extra).start()  # fmt: skip
        feedbacks.append(fb)
        wait_table(kafka, risk_topic, {("terminal_id", "t-old"): [(old, now - 30_000, 1)]}, fb)
        produce(producer, scores_topic, scores[1:])
        # Pruning runs every 30 s: the old entity's entries go, and its record becomes a tombstone.
        latest, _ = wait_table(kafka, risk_topic, {("terminal_id", "t-new"): [(recent, now - 30_000, 1)]}, fb,
                               timeout=90)  # fmt: skip
        assert latest[("terminal_id", 0, "t-old")] is None
        assert fb.stop() == 0
    finally:
        kafka.close()
