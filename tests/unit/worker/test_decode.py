"""Decoder: every reason code, agreement of the fast and exact paths, and no exception escapes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.core.decode import OUT_OF_RANGE, REASONS, STALE_FEATURES, Decoder, Unread
from worker.core.errors import DecodeError

FEATURES = ("Time", "V1", "Amount")


def event(**over) -> bytes:
    doc = {"transaction_id": "tx-1", "Time": 1.0, "V1": -2.5, "Amount": 10}
    doc.update(over)
    return json.dumps({k: v for k, v in doc.items() if v is not ...}).encode()


BAD = {
    "invalid_json": [b"{not json", b'{"Time": 1,}', b'{"transaction_id":"a"} trailing'],
    "invalid_utf8": [b'{"transaction_id": "\xff\xfe", "Time": 1, "V1": 2, "Amount": 3}', b"\xc3"],
    "not_an_object": [b"[1, 2, 3]", b'"a string"', b"42", b"null"],
    "missing_field": [event(V1=...), event(transaction_id=...)],
    "not_a_number": [event(V1="1.5"), event(Amount=True), event(Time=None), event(V1=[1])],
    "non_finite": [
        b'{"transaction_id": "a", "Time": NaN, "V1": 1, "Amount": 1}',
        b'{"transaction_id": "a", "Time": 1, "V1": Infinity, "Amount": 1}',
        b'{"transaction_id": "a", "Time": 1, "V1": -Infinity, "Amount": 1}',
        b'{"transaction_id": "a", "Time": 1e400, "V1": 1, "Amount": 1}',
        b'{"transaction_id": "a", "Time": 1e300, "V1": 1, "Amount": 1}',
        b'{"transaction_id": "a", "Time": 1' + b"0" * 500 + b', "V1": 1, "Amount": 1}',
    ],
    "bad_transaction_id": [event(transaction_id=""), event(transaction_id=7), event(transaction_id="x" * 129)],
    "bad_event_time": [event(event_time=1.5), event(event_time="now"), event(event_time=-1), event(event_time=True)],
    "too_large": [event(pad="x" * 2000)],
    "batch_too_large": [Unread(bytes(61), "batch_too_large", "gzip batch inflates past 16777216 bytes")],
    "batch_unreadable": [Unread(bytes(61), "batch_unreadable", "zstd: codec not available")],
    "empty_value": [None, b"", b"   \n"],
    "duplicate_field": [
        b'{"transaction_id": "a", "Time": 1, "V1": 2, "Amount": 3, "V1": 4}',
        b'{"transaction_id": "a", "transaction_id": "b", "Time": 1, "V1": 2, "Amount": 3}',
        b'{"transaction_id": "a", "Time": 1, "V1": 2, "Amount": 3, "extra": 1, "extra": 2}',
    ],
}


@pytest.fixture
def decoder() -> Decoder:
    return Decoder(FEATURES, max_bytes=1024)


def test_every_reason_code_is_exercised():
    # out_of_range is the scorer's verdict on a decoded row (Scorer.admit): tests/unit/worker/test_out_of_range.py;
    # stale_features the loop's on a repartition topic's record: tests/unit/worker/test_stages.py
    assert set(BAD) | {OUT_OF_RANGE, STALE_FEATURES} == set(REASONS)


@pytest.mark.parametrize("reason,value", [(r, v) for r, vs in BAD.items() for v in vs])
def test_bad_record_gets_its_reason(decoder, reason, value):
    batch = decoder.decode_batch([event(), value, event(transaction_id="tx-2")])
    assert batch.transaction_ids == ["tx-1", "tx-2"]
    assert batch.index == [0, 2]
    [(i, err)] = batch.errors
    assert i == 1 and err.reason == reason, err
    with pytest.raises(DecodeError) as exc:
        decoder.classify(value)
    assert exc.value.reason == reason


def test_valid_records_become_float32_rows_in_feature_order(decoder):
    values = [
        event(),
        event(transaction_id="tx-2", event_time=1_700_000_000_000, extra={"nested": [1, "two"]}),
        b'{"Amount": 3, "V1": 2, "transaction_id": "tx-\\"3", "Time": 1, "event_time": null}',
    ]
    batch = decoder.decode_batch(values)
    assert batch.errors == []
    assert batch.features.dtype == np.float32
    np.testing.assert_array_equal(batch.features, [[1, -2.5, 10], [1, -2.5, 10], [1, 2, 3]])
    assert batch.transaction_ids == ["tx-1", "tx-2", 'tx-"3']
    assert batch.event_times == [None, 1_700_000_000_000, None]


def test_empty_batch(decoder):
    batch = decoder.decode_batch([])
    assert batch.features.shape == (0, 3) and batch.errors == []


def test_invalid_utf8_in_an_ignored_field_is_still_refused(decoder):
    batch = decoder.decode_batch([event(), b'{"transaction_id": "a", "Time": 1, "V1": 2, "Amount": 3, "x": "\xff"}'])
    assert [e.reason for _, e in batch.errors] == ["invalid_utf8"]


def _verdict(decoder: Decoder, value: bytes | None):
    try:
        row, tid, t = decoder.classify(value)
        return ("ok", np.float32(row).tolist(), tid, t)
    except DecodeError as exc:
        return ("error", exc.reason)


def _check_agreement(decoder: Decoder, value: bytes | None) -> None:
    batch = decoder.decode_batch([value])
    if batch.errors:
        [(i, err)] = batch.errors
        assert isinstance(err, DecodeError) and err.reason in REASONS
        assert _verdict(decoder, value) == ("error", err.reason)
    else:
        got = ("ok", batch.features[0].tolist(), batch.transaction_ids[0], batch.event_times[0])
        assert _verdict(decoder, value) == got


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=12),
)
json_values = st.recursive(
    json_scalars,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
    max_leaves=8,
)
field_names = st.sampled_from(["transaction_id", "event_time", *FEATURES, "other", "Class"])


@st.composite
def near_valid(draw) -> bytes:
    pairs = [("transaction_id", draw(st.one_of(st.text(min_size=1, max_size=5), json_values)))]
    for name in FEATURES:
        if draw(st.integers(0, 9)):
            pairs.append((name, draw(st.one_of(st.floats(allow_nan=False), st.integers(), json_values))))
    for _ in range(draw(st.integers(0, 2))):
        pairs.append((draw(field_names), draw(json_values)))
    pairs = draw(st.permutations(pairs))
    body = ", ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in pairs)
    text = "{" + body + "}"
    if draw(st.integers(0, 5)) == 0:  # damage it
        pos = draw(st.integers(0, len(text)))
        text = text[:pos] + draw(st.sampled_from(["NaN", "\\ud800", '"', "}", "1e999", "\x00"])) + text[pos:]
    return text.encode("utf-8", "surrogatepass")


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.none(), st.binary(max_size=80), near_valid()))
def test_only_decode_errors_and_both_paths_agree(value):
    _check_agreement(Decoder(FEATURES, max_bytes=1024), value)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(st.none(), st.binary(max_size=40), near_valid()), max_size=20))
def test_batches_account_for_every_record(values):
    batch = Decoder(FEATURES, max_bytes=1024).decode_batch(values)
    seen = sorted(batch.index + [i for i, _ in batch.errors])
    assert seen == list(range(len(values)))
    assert batch.features.shape == (len(batch.index), len(FEATURES))
    assert np.isfinite(batch.features).all()


def _as_tuple(batch):
    if hasattr(batch, "to_batch"):  # DecodedRows, numpy-free, from one of the two paths
        batch = batch.to_batch()
    return (batch.features.tolist(), batch.transaction_ids, batch.event_times, list(batch.index),
            [(i, e.reason) for i, e in batch.errors])  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(near_valid(), st.just(event()), st.just(event(event_time=5))), min_size=1, max_size=12))
def test_clean_batch_path_agrees_with_the_record_by_record_path(values):
    decoder = Decoder(FEATURES, max_bytes=1024)
    fast = decoder._decode_clean_batch(values, decoder._learn(values) or decoder._shape)
    mixed = decoder._decode_mixed_batch(values)
    if fast is not None:
        assert not mixed.errors, "the clean path accepted a batch holding a bad record"
        assert _as_tuple(fast) == _as_tuple(mixed)
    assert _as_tuple(decoder.decode_batch(values)) == _as_tuple(mixed)


def test_a_clean_batch_takes_the_batch_path_and_one_bad_record_does_not():
    decoder = Decoder(FEATURES)
    clean = [event(transaction_id=f"t{i}", event_time=i if i % 2 else ...) for i in range(50)]
    assert decoder._decode_clean_batch(clean, decoder._shape) is not None
    mixed = clean[:10] + [event(V1="x")] + clean[10:]
    assert decoder._decode_clean_batch(mixed, decoder._shape) is None
    batch = decoder.decode_batch(mixed)
    assert [(i, e.reason) for i, e in batch.errors] == [(10, "not_a_number")]
    assert len(batch.index) == 50


extreme_numbers = st.one_of(
    st.floats(),  # NaN, infinities, subnormals, +-1.8e308
    st.floats(min_value=-3.5e38, max_value=3.5e38),  # either side of the float32 limit
    st.integers(min_value=-(10**40), max_value=10**40),
    st.integers(min_value=1, max_value=400).map(lambda n: 10**n),
)


@st.composite
def extreme_or_deep(draw) -> bytes:
    doc = {
        "transaction_id": draw(st.text(min_size=1, max_size=8)),
        **{name: draw(extreme_numbers) for name in FEATURES},
    }
    text = json.dumps(doc, allow_nan=True)
    if draw(st.booleans()):  # nest one feature's value (or the whole document) deeply
        n = draw(st.integers(1, 5000))
        nested = "[" * n + "1" + "]" * n
        text = nested if draw(st.booleans()) else text.replace('"V1": ', f'"V1": {nested}, "x": ', 1)
    return text.encode("utf-8", "surrogatepass")


@settings(max_examples=300, deadline=None)
@given(extreme_or_deep())
def test_extreme_numbers_and_deep_nesting_only_raise_decode_errors(value):
    decoder = Decoder(FEATURES, max_bytes=1 << 20)
    _check_agreement(decoder, value)
    batch = decoder.decode_batch([value])
    assert np.isfinite(batch.features).all() and batch.features.dtype == np.float32


def _learned(*extras: str) -> Decoder:
    """A decoder that has seen events with these extra fields (the model does not read them)."""
    decoder = Decoder(FEATURES, max_bytes=1024)
    decoder.decode_batch([event(**{name: 1 for name in extras})])
    assert set(decoder._shape.extras) == set(extras)
    return decoder


def test_events_with_extra_fields_take_the_batch_path_once_their_shape_is_learned():
    decoder = Decoder(FEATURES)
    batch = [event(transaction_id=f"t{i}", Class=i % 2, merchant=f"m{i}", note=None) for i in range(40)]
    batch[3] = event(transaction_id="t3", Class="1")  # some extras absent, one a string
    assert decoder._decode_clean_batch(batch, decoder._shape) is None  # not the shape without extras
    got = decoder.decode_batch(batch)
    assert set(decoder._shape.extras) == {"Class", "merchant", "note"}
    assert decoder._decode_clean_batch(batch, decoder._shape) is not None
    assert _as_tuple(got) == _as_tuple(decoder._decode_mixed_batch(batch))
    assert got.transaction_ids == [f"t{i}" for i in range(40)] and not got.errors


@pytest.mark.parametrize(
    "value,reason",
    [
        (b'{"transaction_id": "a", "Time": 1, "V1": 2, "Amount": 3, "Class": 0, "Class": 1}', "duplicate_field"),
        (b'{"transaction_id": "a", "Time": 1, "V1": 2, "Amount": 3, "Class": 0, "Cl\\u0061ss": 1}', "duplicate_field"),
        (b'{"transaction_id": "a", "Time": 1, "V1": 2, "Amount": 3, "Class": NaN}', "non_finite"),
        (b'{"transaction_id": "a", "Time": 1, "V1": 2, "Amount": 3, "Class": "\\ud800"}', "invalid_json"),
        (b'{"transaction_id": "a", "Time": 1, "V1": 2, "Amount": 3, "Class": "\xff"}', "invalid_utf8"),
        (b'{"transaction_id": "a", "Time": 1, "V1": 2, "Amount": 3, "Class": 0, "V1": 5}', "duplicate_field"),
    ],
)
def test_a_learned_shape_still_refuses_what_the_exact_path_refuses(value, reason):
    decoder = _learned("Class")
    batch = decoder.decode_batch([event(Class=1), value, event(Class=0)])
    assert [(i, e.reason) for i, e in batch.errors] == [(1, reason)]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(near_valid(), st.just(event(other=1)), st.just(event(Class="x"))), min_size=1, max_size=8))
def test_with_a_learned_shape_both_paths_still_agree_with_the_exact_path(values):
    decoder = _learned("other", "Class")
    for value in values:
        _check_agreement(decoder, value)
    fast = decoder._decode_clean_batch(values, decoder._shape)
    mixed = decoder._decode_mixed_batch(values)
    if fast is not None:
        assert not mixed.errors and _as_tuple(fast) == _as_tuple(mixed)
    assert _as_tuple(decoder.decode_batch(values)) == _as_tuple(mixed)
