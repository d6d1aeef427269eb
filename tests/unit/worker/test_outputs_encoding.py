"""encode_results builds each payload from columns of pieces; it must equal, byte for byte, what
msgspec makes of the plain dict a score record is (the encoding this module held before)."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.worker.conftest import SPEC
from worker.core.decimals import float32_decimals
from worker.core.outputs import encode_results
from worker.core.scoring import Scorer, load_scorer

N = len(SPEC["feature_names"])


def _reference(scorer: Scorer, rows, ids, times, scaled, raw, scores, scored_at, k, features=False) -> list[bytes]:
    """The dict per row, encoded by msgspec: the contract the column-built payloads are held to."""
    rows = list(rows)
    if not rows:
        return []
    reasons = scorer.top_reasons_many(scaled[rows], raw[rows], k)
    docs = [
        {
            "transaction_id": ids[j],
            "score": score,
            "threshold": scorer.threshold,
            "model_version": scorer.version,
            "reasons": [{"feature": f, "contribution": c, "value": v} for f, c, v in why],
            "event_time": times[j],
            "scored_at": scored_at,
        }
        for j, score, why in zip(rows, scores[rows].astype(np.float64).tolist(), reasons, strict=True)
    ]
    if features:
        for doc, values in zip(docs, float32_decimals(raw[rows]).tolist(), strict=True):
            doc["features"] = dict(zip(scorer.feature_names, values, strict=True))
    return [msgspec.json.encode(doc) for doc in docs]


@pytest.fixture(scope="module")
def scorer(tmp_path_factory) -> Scorer:
    from tests.support.bundles import make_bundle

    models = tmp_path_factory.mktemp("encoding") / "models"
    make_bundle(models, "v1", **SPEC)
    return load_scorer(str(models))


BOUND = float(np.float32(1e30))  # scaled, larger magnitudes overflow float32 (the decoder allows them)
finite = st.floats(-BOUND, BOUND, width=32)
ids = st.text(min_size=1, max_size=20)  # any text: quotes, backslashes, control characters, non-ASCII


@settings(max_examples=150, deadline=None)
@given(
    data=st.data(),
    n=st.integers(1, 12),
    k=st.integers(0, N + 2),
    features=st.booleans(),
    scored_at=st.integers(0, 2**63 - 1),
)
def test_payloads_equal_msgspecs_encoding_of_the_score_record_dict(scorer, data, n, k, features, scored_at):
    raw = np.array(data.draw(st.lists(st.lists(finite, min_size=N, max_size=N), min_size=n, max_size=n)),
                   dtype=np.float32)  # fmt: skip
    scaled = scorer.scale(raw)
    scores = scorer.score_scaled(scaled)
    tids = data.draw(st.lists(ids, min_size=n, max_size=n))
    times = dict(enumerate(data.draw(st.lists(st.integers(0, 2**63 - 1), min_size=n, max_size=n))))
    rows = sorted(data.draw(st.sets(st.integers(0, n - 1), min_size=1)))
    args = (scorer, rows, tids, times, scaled, raw, scores, scored_at, k)
    assert encode_results(*args, features=features) == _reference(*args, features=features)


def test_rows_may_be_a_range_or_an_index_array_and_none_gives_no_payload(scorer):
    raw = np.random.default_rng(3).normal(0, 3, (50, N)).astype(np.float32)
    scaled, tids = scorer.scale(raw), [f"tx-{i}" for i in range(50)]
    scores = scorer.score_scaled(scaled)
    times = {j: 1_700_000_000_000 + j for j in range(50)}
    hits = np.flatnonzero(scores >= 0.5)
    for rows in (range(50), hits, np.array([], dtype=np.int64)):
        args = (scorer, rows, tids, times, scaled, raw, scores, 7, 3)
        assert encode_results(*args) == _reference(*args)
    assert encode_results(scorer, [], tids, times, scaled, raw, scores, 7, 3) == []
