"""Contract test of worker/kafka_compat against a real consumer and a real broker.

For each fast path: every kafka-python internal it relies on is there (the start-up check passes
on this kafka-python), the path is actually taken while a real consumer works (a kafka-python that
stopped consulting ``Fetcher.PartitionRecords``, say, would silently bypass the reader: the counts
would stay at zero), and with the fast paths switched off the same work is done by kafka-python's
own code, with the same results. A rebalance while a batch's results are still unacknowledged
commits them through the revocation path before the partitions go.
"""

from __future__ import annotations

import logging
import threading
import time

import pytest
from kafka.future import Future
from prometheus_client import CollectorRegistry

from tests.support.bundles import make_bundle
from tests.support.workers import committed, event_bytes
from worker.edges.clients import KafkaClients
from worker.edges.config import WorkerConfig
from worker.edges.health import HealthState
from worker.edges.metrics import WorkerMetrics
from worker.kafka_compat import FAST_PATHS, TAKEN, KafkaCompat, parse_fast_paths
from worker.models.watcher import ModelWatcher
from worker.pipeline.loop import Worker

SPEC = dict(feature_names=("f0", "f1"), mean=[0.0, 0.0], scale=[1.0, 1.0], weights=[3.0, 0.0], bias=0.0, threshold=0.5)


def test_every_internal_is_there(kafka):
    consumer = kafka.consumer(group_id=kafka.group())
    assert KafkaCompat.install(consumer, parse_fast_paths("all")).active == frozenset(FAST_PATHS)


def _without_partition_records(monkeypatch, consumer) -> None:
    from kafka.consumer.fetcher import Fetcher

    monkeypatch.delattr(Fetcher, "PartitionRecords")


def _without_pending_fetches(monkeypatch, consumer) -> None:
    monkeypatch.delattr(consumer._fetcher, "_nodes_with_pending_fetch_requests")


def _without_wait_for(monkeypatch, consumer) -> None:
    monkeypatch.delattr(type(consumer._manager), "wait_for")


def _without_commit_coroutine(monkeypatch, consumer) -> None:
    monkeypatch.delattr(type(consumer._coordinator), "_commit_offsets_sync_async")


def _inflating_behind_its_back(monkeypatch, consumer) -> None:
    from kafka.record.default_records import DefaultRecordBatch

    def inflate_then_iterate(batch):  # not through the batch's own _maybe_uncompress
        DefaultRecordBatch._maybe_uncompress(batch)
        return batch

    monkeypatch.setattr(DefaultRecordBatch, "__iter__", inflate_then_iterate)


def _without_try_append(monkeypatch, consumer) -> None:
    from kafka.producer.producer_batch import ProducerBatch

    monkeypatch.delattr(ProducerBatch, "try_append")


@pytest.mark.parametrize(
    "missing, remove",
    [(("record_reader", "inflate_cap"), _without_partition_records), (("inflate_cap",), _inflating_behind_its_back),
     (("handoff_shortcuts",), _without_pending_fetches), (("metadata_wait",), _without_wait_for),
     (("revocation_commit",), _without_commit_coroutine), (("batch_send",), _without_try_append)],
)  # fmt: skip
def test_a_kafka_python_without_an_internal_leaves_that_fast_path_off_with_one_line(
    kafka, monkeypatch, caplog, missing, remove
):
    consumer = kafka.consumer(group_id=kafka.group())
    remove(monkeypatch, consumer)
    with caplog.at_level(logging.WARNING, logger="worker.kafka_compat"):
        active = KafkaCompat.install(consumer, parse_fast_paths("all")).active
    assert active == frozenset(FAST_PATHS) - set(missing)
    lines = [r.getMessage() for r in caplog.records if r.name == "worker.kafka_compat"]
    assert len(lines) == len(missing), lines
    assert all(f"fast path {name} is off" in line for name, line in zip(missing, lines, strict=True)), lines


def _stream(kafka, topic: str, n: int) -> None:
    producer = kafka.producer(linger_ms=5)
    for i in range(n):
        producer.send(topic, key=str(i % 7).encode(), value=str(i).encode())
    producer.flush(timeout=30)


@pytest.mark.parametrize("fast_paths", ["all", "none"])
def test_a_real_consumer_takes_each_fast_path_and_reads_the_same_records_without_them(kafka, fast_paths):
    topic = kafka.topic(partitions=3)
    _stream(kafka, topic, 3_000)
    consumer = kafka.consumer(group_id=kafka.group(), enable_auto_commit=False, fetch_max_wait_ms=20)
    before = dict(TAKEN)
    compat = KafkaCompat.install(consumer, parse_fast_paths(fast_paths))
    consumer.subscribe([topic])
    compat.await_partitions(consumer, topic, 5_000)
    seen: list[int] = []
    deadline = time.monotonic() + 60
    while len(seen) < 3_000 and time.monotonic() < deadline:
        for timeout in (100, 0):  # as the worker polls: waiting, then at once while a batch is decoded
            for records in consumer.poll(timeout_ms=timeout).values():
                seen += [int(r.value) for r in records]
    taken = {name: TAKEN[name] - before.get(name, 0) for name in FAST_PATHS}
    assert sorted(seen) == list(range(3_000)), "a record was lost or delivered twice"
    if fast_paths == "all":
        assert taken["record_reader"] > 0, "kafka-python no longer reads through the worker's reader"
        assert taken["handoff_shortcuts"] > 0, "no poll hand-off was ever skipped"
        assert taken["metadata_wait"] == 1
    else:
        assert taken == dict.fromkeys(FAST_PATHS, 0), taken


def _records(topics: dict[str, int]) -> list[tuple]:
    """Output records as the worker makes them, and the ones batch_send leaves to send(): no key, no
    value, near the request size limit."""
    out = []
    for i in range(6_000):
        topic = list(topics)[i % len(topics)]
        key = None if i % 500 == 7 else f"tx-{i % 911}".encode()
        headers = [("source_offset", str(i).encode())] if i % 3 else None
        out.append((topic, key, f"value-{i}".encode(), headers))
    out.insert(4_321, (list(topics)[0], b"big", b"x" * 1_047_000, None))
    out.insert(17, (list(topics)[1], b"tombstone", None, [("error", b"empty_value")]))  # a DLQ record of a null value
    return out


def _landed(kafka, topics: dict[str, int], n: int, **config) -> dict[str, dict[int, list[tuple]]]:
    """What each topic's partitions hold, in offset order: (key, value, headers)."""
    consumer = kafka.consumer(*topics, group_id=kafka.group(), fetch_max_bytes=4 << 20, **config)
    got: dict[str, dict[int, list[tuple]]] = {t: {} for t in topics}
    seen, deadline = 0, time.monotonic() + 60
    while seen < n and time.monotonic() < deadline:
        for tp, records in consumer.poll(timeout_ms=500).items():
            got[tp.topic].setdefault(tp.partition, []).extend((r.key, r.value, list(r.headers)) for r in records)
            seen += len(records)
    return got


def _producers(kafka, transactional: bool, topics, **config) -> list:
    """Two producers alike (kafka-python's way, the fast path), each knowing every topic's partitions, with a
    transaction open when ``transactional``."""
    producers = [kafka.producer(linger_ms=5, **config, **({"transactional_id": kafka.group()} if transactional else {}))
                 for _ in range(2)]  # fmt: skip
    for p in producers:
        for t in topics:  # metadata first: every topic's partitions known to both producers
            p.partitions_for(t)
        if transactional:
            p.init_transactions()
            p.begin_transaction()
    return producers


@pytest.mark.parametrize("transactional", [False, True])
def test_batch_send_puts_each_record_where_send_would_in_the_same_order(kafka, transactional):
    """The contract of batch_send: the same partition and the same order per partition as
    KafkaProducer.send, for the records it appends itself and the ones it leaves to send()."""
    from worker.kafka_compat import sends

    plain = {kafka.topic(partitions=3): 3, kafka.topic(partitions=5): 5}
    fast = {kafka.topic(partitions=n): n for n in plain.values()}
    records = _records(plain)
    as_fast = [(list(fast)[list(plain).index(t)], k, v, h) for t, k, v, h in records]
    producers = _producers(kafka, transactional, (*plain, *fast))
    before = TAKEN["batch_send"]
    sends.check_sends(producers[1])
    plain_futures = [f for i in range(0, len(records), 1_000)
                     for f in sends.send_all_plain(producers[0], records[i : i + 1_000])]  # fmt: skip
    fast_futures = [f for i in range(0, len(records), 1_000)
                    for f in sends.send_all(producers[1], as_fast[i : i + 1_000])]  # fmt: skip
    assert TAKEN["batch_send"] - before == 7
    for p in producers:
        if transactional:
            p.commit_transaction()
        p.flush(timeout=30)
    assert all(f.is_done and f.succeeded() for f in plain_futures + fast_futures)
    keyed = [r[1] is not None for r in records]  # a record without a key goes where send()'s sticky choice puts it
    assert [f.get().partition for f, k in zip(fast_futures, keyed, strict=True) if k] == [
        f.get().partition for f, k in zip(plain_futures, keyed, strict=True) if k
    ]
    read = {"isolation_level": "read_committed"} if transactional else {}
    want, got = _landed(kafka, plain, len(records), **read), _landed(kafka, fast, len(records), **read)
    assert sum(len(v) for parts in got.values() for v in parts.values()) == len(records)
    for f, p in zip(fast, plain, strict=True):
        every = [sorted(repr(r) for rs in landed.values() for r in rs) for landed in (got[f], want[p])]
        assert every[0] == every[1], "the topic holds other records"  # the keyless ones too
        assert {n: [r for r in rs if r[0] is not None] for n, rs in got[f].items()} == {
            n: [r for r in rs if r[0] is not None] for n, rs in want[p].items()
        }, "the keyed records of a partition in another order"


@pytest.mark.parametrize("transactional", [False, True])
def test_batch_send_to_a_partition_puts_each_record_there_in_order_as_send_would(kafka, transactional):
    """The contract of ``send_to`` (the feature changelog's writes): every record on the partition named, in
    order, as ``KafkaProducer.send(partition=...)`` puts them; one too large to append goes through send()."""
    from worker.kafka_compat import sends

    plain, fast = kafka.topic(partitions=3), kafka.topic(partitions=3)
    records = [(f"e{i % 50}".encode(), bytes([i % 251]) * (1 + i % 300)) for i in range(3_000)]
    records[1_234] = (b"big", b"x" * 64_700)  # near the request size (64 KiB): send() itself, in its place
    producers = _producers(kafka, transactional, (plain, fast), max_request_size=65_536)
    before = TAKEN["batch_send"]
    sends.check_sends(producers[1])
    plain_futures = sends.send_to_plain(producers[0], plain, 2, records)
    fast_futures = sends.send_to(producers[1], fast, 2, records)
    assert TAKEN["batch_send"] - before == 1
    for p in producers:
        if transactional:
            p.commit_transaction()
        p.flush(timeout=30)
    assert all(f.is_done and f.succeeded() for f in plain_futures + fast_futures)
    assert {f.get().partition for f in fast_futures} == {2}
    read = {"isolation_level": "read_committed"} if transactional else {}
    want = _landed(kafka, {plain: 3}, len(records), **read)[plain]
    got = _landed(kafka, {fast: 3}, len(records), **read)[fast]
    assert list(got) == list(want) == [2]
    assert got[2] == want[2] == [(k, v, []) for k, v in records]


def test_batch_send_on_a_producer_without_its_internals_says_so_once_and_sends_all_the_same(kafka, caplog):
    topic = kafka.topic(partitions=2)
    wrapped = DelayedProducer(kafka.producer(), delay=0.0)  # send() only: no accumulator to append to
    compat = KafkaCompat(frozenset({"batch_send"}))
    with caplog.at_level(logging.WARNING, logger="worker.kafka_compat"):
        futures = [f for _ in range(3) for f in compat.send_all(wrapped, [(topic, b"k", b"v", None)] * 10)]
    deadline = time.monotonic() + 30
    while not all(f.is_done for f in futures) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(futures) == 30 and all(f.is_done and f.succeeded() for f in futures)
    lines = [r.getMessage() for r in caplog.records if r.name == "worker.kafka_compat"]
    assert len(lines) == 1 and "fast path batch_send is off" in lines[0], lines
    assert "batch_send" not in compat.active


class DelayedProducer:
    """A real producer whose acknowledgements reach the worker ``delay`` seconds late."""

    def __init__(self, producer, delay: float) -> None:
        self.producer, self.delay = producer, delay
        self.sends = threading.Event()

    def send(self, topic, key=None, value=None, headers=None):
        real, late = self.producer.send(topic, key=key, value=value, headers=headers), Future()

        def pass_on(result, ok: bool) -> None:
            threading.Timer(self.delay, late.success if ok else late.failure, (result,)).start()

        real.add_callback(pass_on, True)
        real.add_errback(pass_on, False)
        self.sends.set()
        return late

    def close(self, timeout=None) -> None:
        self.producer.close(timeout=timeout)


class SlowAcks(KafkaClients):
    def producer(self):
        self.delayed = DelayedProducer(super().producer(), delay=2.0)
        return self.delayed


@pytest.mark.parametrize("fast_paths", ["all", "none"])
def test_a_rebalance_with_results_in_flight_commits_them_through_the_revocation_path(
    kafka, tmp_path, caplog, fast_paths
):
    topic, alerts, dlq = kafka.topic(partitions=2), kafka.topic(), kafka.topic()
    group = kafka.group()
    make_bundle(tmp_path / "models", "v1", **SPEC)
    metrics = WorkerMetrics(CollectorRegistry())
    models = ModelWatcher(str(tmp_path / "models"), metrics)
    models.load_initial()
    config = WorkerConfig(
        bootstrap_servers=kafka.bootstrap, input_topic=topic, alert_topic=alerts, dlq_topic=dlq, group_id=group,
        decoder_processes=0, poll_timeout_ms=100, fast_paths=fast_paths,
        kafka_options=(("heartbeat_interval_ms", 200),),
    )  # fmt: skip
    clients = SlowAcks(config)
    worker = Worker(config, models, metrics, HealthState(30), clients=clients)
    in_flight_at_revocation: list[dict] = []  # the unacknowledged tail's offsets, at each revocation
    revoke = worker.listener.on_partitions_revoked

    async def watched(partitions) -> None:
        tail = worker.chain.tail
        if partitions and tail is not None and not tail.done.is_done:
            in_flight_at_revocation.append({tp: o for tp, o in tail.next_offsets.items() if tp in partitions})
        await revoke(partitions)

    worker.listener.on_partitions_revoked = watched  # type: ignore[method-assign]
    stop = threading.Event()

    def stream() -> None:  # a steady stream, an alert every 40 events: results keep waiting for their acks
        producer = kafka.producer(linger_ms=0)
        i = 0
        while not stop.is_set():
            value = event_bytes(f"tx-{i}", {"f0": 1.0 if i % 40 == 0 else -1.0, "f1": 0.0})
            producer.send(topic, key=str(i).encode(), value=value)
            i += 1
            time.sleep(0.002)
        producer.flush(timeout=30)

    runner = threading.Thread(target=worker.run, daemon=True)
    streamer = threading.Thread(target=stream, daemon=True)
    before = TAKEN["revocation_commit"]
    runner.start()
    try:
        while not worker.health.partitions:
            time.sleep(0.05)
        streamer.start()
        assert clients.delayed.sends.wait(30), "the worker sent no results"
        time.sleep(1.0)
        # A second member joins: the worker's partitions are revoked while its results wait for acks.
        with caplog.at_level(logging.INFO, logger="worker.delivery.rebalance"):
            other = kafka.consumer(topic, group_id=group, enable_auto_commit=False)
            deadline = time.monotonic() + 30
            while not other.assignment() and time.monotonic() < deadline:
                other.poll(timeout_ms=100)
        assert other.assignment(), "the second member got no partitions"
        stop.set()
        assert in_flight_at_revocation, "no revocation came while results were unacknowledged"
        # The in-flight batch's offsets were committed before its partitions moved on.
        got = committed(kafka, group, topic)
        for offsets in in_flight_at_revocation:
            for tp, o in offsets.items():
                assert got.get(tp.partition, 0) >= o, (got, offsets)
        assert any("on revocation" in r.getMessage() and r.levelno == logging.INFO for r in caplog.records)
        used = TAKEN["revocation_commit"] - before
        assert used >= 1 if fast_paths == "all" else used == 0
    finally:
        stop.set()
        worker.request_stop()
        runner.join(timeout=60)
    assert not runner.is_alive()


@pytest.mark.parametrize("fast_paths", ["all", "none"])
def test_a_real_consumer_inflates_compressed_batches_to_the_cap_and_hands_on_a_larger_ones_records_unread(
    kafka, fast_paths
):
    from worker.core.decode import Unread

    topic = kafka.topic(partitions=1)
    producer = kafka.producer(compression_type="gzip", linger_ms=200, batch_size=8 << 20, max_request_size=8 << 20)
    for i in range(20):  # one batch of about 20 KB inflated
        producer.send(topic, value=b'{"n": %d}' % i)
    producer.flush(timeout=30)
    for value in (b"a", b"0" * 3_000_000, b"b"):  # one batch of 3 MB inflated: over a 1 MB cap
        producer.send(topic, value=value)
    producer.flush(timeout=30)
    consumer = kafka.consumer(group_id=kafka.group(), enable_auto_commit=False)
    before = TAKEN["inflate_cap"]
    compat = KafkaCompat.install(consumer, parse_fast_paths(fast_paths), inflate_cap=1 << 20)
    consumer.subscribe([topic])
    compat.await_partitions(consumer, topic, 5_000)
    got: list = []
    deadline = time.monotonic() + 30
    while len(got) < 23 and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=200).values():
            got += records
    assert [r.offset for r in got] == list(range(23))
    assert [r.value for r in got[:20]] == [b'{"n": %d}' % i for i in range(20)]
    if fast_paths == "all":
        assert TAKEN["inflate_cap"] - before == 2, "kafka-python no longer inflates through the capped batch"
        assert all(type(r.value) is Unread and r.value.reason == "batch_too_large" for r in got[20:])
    else:
        assert TAKEN["inflate_cap"] == before
        assert [r.value for r in got[20:]] == [b"a", b"0" * 3_000_000, b"b"]
