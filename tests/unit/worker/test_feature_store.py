"""A partition's feature state in SQLite (worker/state/feature_store.py): what a flush writes is what a
reopened store reads; memory holds a bounded cache; a damaged file is moved aside."""

from __future__ import annotations

import random

from worker.core.batch_features import BatchFeatures
from worker.core.features import FeatureEngine, from_mapping
from worker.state.feature_store import PartitionStore, decode_state, encode_state

SPEC = from_mapping({"entity": [{"field": "card", "windows": ["1h", "1d"], "delay": "0s",
                                 "aggregates": ["count", "mean(amount)", "max(amount)", "distinct(shop)",
                                                "since_previous"]}]}, "s")  # fmt: skip


def _stream(n: int, seed: int = 0):
    rng = random.Random(seed)
    t = 1_700_000_000_000
    for _ in range(n):
        t += rng.choice([0, 1000, 60_000, 3_600_000])
        yield t, [rng.choice("abcdefgh"), round(rng.uniform(1, 100), 2), rng.choice(["s1", "s2", "s3"])]


def test_a_state_reads_back_as_it_was_written():
    engine = FeatureEngine(SPEC)
    for t, values in _stream(300):
        engine.step(t, values, [])
    for state in engine.store.values():  # type: ignore[attr-defined]
        back = decode_state(encode_state(state))
        assert encode_state(back) == encode_state(state)
        assert [list(w.buckets) for w in back.windows] == [list(w.buckets) for w in state.windows]


def test_a_reopened_store_goes_on_exactly_where_the_flush_left_it(tmp_path):
    # One engine straight through, against one whose store is flushed, closed and reopened halfway.
    events = list(_stream(600, 1))
    straight = FeatureEngine(SPEC)
    want: list[float] = []
    for t, values in events:
        straight.step(t, values, want)
    got: list[float] = []
    store = PartitionStore(tmp_path / "p0.sqlite", cache_entities=2)
    engine = FeatureEngine(SPEC, store)
    for t, values in events[:300]:
        engine.step(t, values, got)
    store.flush()
    store.close()
    store = PartitionStore(tmp_path / "p0.sqlite", cache_entities=2)
    engine = FeatureEngine(SPEC, store)
    for i, (t, values) in enumerate(events[300:]):
        engine.step(t, values, got)
        if i % 50 == 0:
            store.flush()  # the cache drops entities; they are read back from the file
    assert got == want
    assert len(store) == 8


def test_after_a_crash_the_events_polled_again_get_their_first_features_and_count_once(tmp_path):
    events = [(t, {"card": v[0], "amount": v[1], "shop": v[2]}) for t, v in _stream(200, 2)]
    values = [b'{"event_time": %d, "card": "%s", "amount": %r, "shop": "%s"}' % (t, e["card"].encode(), e["amount"],
              e["shop"].encode()) for t, e in events]  # fmt: skip
    from worker.core.decode import Decoder

    decoder = Decoder(["amount"])

    def run(features: BatchFeatures, first: int, last: int):
        chunk = [v.replace(b"{", b'{"transaction_id": "t%d", ' % i, 1) for i, v in enumerate(values)][first:last]
        decoded = decoder.decode_batch(chunk)
        return features.extend(decoded, [chunk[i] for i in decoded.index], [0] * len(chunk), list(range(first, last)))

    reference = run(BatchFeatures(SPEC), 0, 200).features
    path = tmp_path / "p.sqlite"
    store = PartitionStore(path)
    features = BatchFeatures(SPEC, lambda p: store)
    run(features, 0, 120)
    # The worker flushes before committing 80 (40 known committed), and is killed before that commit lands.
    store.flush(committed=40)
    store.close()
    store = PartitionStore(path)  # the replacement polls again from the committed offset 40
    features = BatchFeatures(SPEC, lambda p: store)
    again = run(features, 40, 200).features
    assert features.replayed == 80 and features.unrecorded == 0
    assert (again == reference[40:]).all()
    assert len(store) == len({e["card"] for _, e in events})


def test_a_damaged_file_is_moved_aside_and_the_partition_starts_empty(tmp_path):
    path = tmp_path / "p.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    store = PartitionStore(path)
    assert store.reset and len(store) == 0 and store.next_offset == -1
    assert [p.name.startswith("p.sqlite.damaged-") for p in tmp_path.iterdir()].count(True) == 1


def test_a_state_directory_that_cannot_be_used_is_one_line_naming_it(tmp_path):
    import pytest

    from worker.core.errors import ConfigError
    from worker.state.feature_state import FeatureState

    blocked = tmp_path / "state"
    blocked.write_text("a file where the directory should be")
    state = FeatureState(blocked, 100)
    with pytest.raises(ConfigError) as info:
        state.features_for(SPEC).partition(("transactions", 0))
    assert "\n" not in str(info.value) and str(blocked) in str(info.value) and "feature_state_dir" in str(info.value)


def test_a_partition_revoked_under_a_batch_in_hand_is_not_counted_until_it_is_assigned_again(tmp_path):
    # The rebalance listener runs on kafka-python's thread: the loop may still compute a batch of a partition
    # the listener has just given away. Those events must not reopen the partition's store.
    from kafka import TopicPartition

    from worker.state.feature_state import FeatureState

    state = FeatureState(tmp_path / "state", 100)
    features = state.features_for(SPEC)
    tp = TopicPartition("transactions", 0)
    _, first = features.partition(("transactions", 0))
    first["a"] = next(iter(_engine_with_one_event().store.values()))  # type: ignore[attr-defined]
    state.forget([tp])
    _, during = features.partition(("transactions", 0))
    assert not isinstance(during, PartitionStore) and state.entities == 0
    state.assigned([tp])
    _, after = features.partition(("transactions", 0))
    assert isinstance(after, PartitionStore) and after is not first


def _engine_with_one_event() -> FeatureEngine:
    engine = FeatureEngine(SPEC)
    engine.step(1_700_000_000_000, ["a", 1.0, "s1"], [])
    return engine


def test_without_a_changelog_a_flush_writes_only_what_changed_since_the_last_one(tmp_path):
    # With feature_changelog_topic = none nothing confirms the entities flushed: each flush re-encoded every
    # entity changed since the start, a cost that grew with the state until commits took seconds.
    from kafka import TopicPartition
    from kafka.structs import OffsetAndMetadata

    from worker.state.feature_state import FeatureState

    state = FeatureState(tmp_path / "state", 100)
    features = state.features_for(SPEC)
    engine, store = features.partition(("transactions", 0))
    tp = TopicPartition("transactions", 0)
    for offset, (t, values) in enumerate(_stream(200)):
        engine.step(t / 1000, values, [])
        store.record(offset, b"")
    state.before_commit({tp: OffsetAndMetadata(200, "", -1)})
    assert isinstance(store, PartitionStore) and len(store.unlogged) == 0
    engine.step(1_800_000_000, ["z", 1.0, "s1"], [])
    store.record(200, b"")
    assert store.flush() == [("0:z", encode_state(store["0:z"]))]


def test_an_assignment_never_waits_for_the_restore_which_the_loop_does_before_its_next_batch(tmp_path):
    # The rebalance listener runs on kafka-python's IO thread, which also sends the heartbeats: a restore there
    # (25 s for 1,000,000 entities) outlived the session timeout, and the member was dropped, rejoined and
    # restored again, for ever. The loop opens (and restores) the assigned partitions after its poll.
    import threading
    import time

    from kafka import TopicPartition

    from worker.state.feature_state import FeatureState

    class SlowChangelog:
        topic, records_written = "changelog", 0

        def __init__(self) -> None:
            self.reads = 0

        def ensure(self, partitions: int) -> None:
            pass

        def read(self, partition: int, start: int):
            self.reads += 1
            time.sleep(0.5)
            return iter(())

    changelog = SlowChangelog()
    state = FeatureState(tmp_path / "state", 100, changelog)  # type: ignore[arg-type]
    state.serve({"transactions": SPEC})
    listener = threading.Thread(target=state.assigned, args=([TopicPartition("transactions", 0)],))
    started = time.monotonic()
    listener.start()
    listener.join()
    assert time.monotonic() - started < 0.2 and changelog.reads == 0
    state.open_assigned()  # the loop, after its poll
    assert changelog.reads == 1 and state.entities == 0
    _, store = state.features_for(SPEC).partition(("transactions", 0))
    assert isinstance(store, PartitionStore) and changelog.reads == 1  # opened once, not again at its first event


def test_a_restore_under_way_shows_its_progress_and_none_after(tmp_path):
    from kafka import TopicPartition

    from worker.state.feature_state import FeatureState, spec_id

    sid = spec_id(SPEC)
    state_bytes = encode_state(_engine_with_one_event().store["0:a"])  # type: ignore[index]
    seen: list[int] = []

    class Changelog:
        topic, records_written = "changelog", 0

        def ensure(self, partitions: int) -> None:
            pass

        def read(self, partition: int, start: int):
            for i in range(5):
                seen.append(state.restoring)  # what a scrape would read now
                yield i, f"{sid}/s/0:e{i}".encode(), state_bytes

    state = FeatureState(tmp_path / "state", 100, Changelog())  # type: ignore[arg-type]
    state.serve({"transactions": SPEC})
    state.assigned([TopicPartition("transactions", 0)])
    state.open_assigned()
    assert seen == [0, 1, 2, 3, 4] and state.restoring == 0 and state.restored == 5
