"""``score_decoded`` (worker/core/batch_scoring.py), the one scoring of a decoded batch that the loop, the shadow and
the backtest share, is the scorer's own steps: ``Scorer.admit``, then ``Scorer.score_batch``, guards and all; and
``score_payloads`` is ``encode_results`` over every valid row."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.unit.worker.conftest import SPEC
from worker.core.batch_scoring import score_decoded
from worker.core.decode import Decoder
from worker.core.outputs import encode_results, score_payloads
from worker.core.scoring import load_scorer

NAMES = SPEC["feature_names"]


def _line(i: int, **values: float) -> bytes:
    rng = np.random.default_rng(i)
    doc = {"transaction_id": f"tx-{i}", **dict(zip(NAMES, rng.normal(0, 2, len(NAMES)).tolist(), strict=True))}
    return json.dumps({**doc, **values}).encode()


@pytest.fixture
def batch(models):
    scorer = load_scorer(str(models))
    values = [_line(0), b"{not json", _line(2, f0=3e38), _line(3, f1=1e6), _line(4), b"", _line(5, f4=-40.0)]
    return scorer, Decoder(scorer.feature_names).decode_batch(values)


def test_score_decoded_is_the_scorers_admit_then_score_batch(batch):
    scorer, decoded = batch
    scored = score_decoded(scorer, decoded)
    admitted = scorer.admit(decoded)
    assert scored.decoded.index == admitted.index and scored.decoded.index != decoded.index
    assert [(i, e.reason) for i, e in scored.decoded.errors] == [(i, e.reason) for i, e in admitted.errors]
    assert "out_of_range" in [e.reason for _, e in scored.decoded.errors]
    own = scorer.score_batch(admitted.features)
    assert scored.scaled is not None and scored.scores is not None
    np.testing.assert_array_equal(scored.scaled, own.scaled)
    np.testing.assert_array_equal(scored.scores, own.scores)
    assert (scored.clipped_training, scored.clipped_scaled, scored.out_of_range) == (
        own.clipped_training, own.clipped_scaled, own.out_of_range)  # fmt: skip
    np.testing.assert_array_equal(scored.scores, scorer.score(admitted.features))
    assert scored.seconds >= 0.0


def test_without_admit_the_rows_are_scored_as_they_are(batch):
    scorer, decoded = batch
    scored = score_decoded(scorer, decoded, admit=False)
    assert scored.decoded is decoded
    assert scored.scores is not None and len(scored.scores) == len(decoded.index)
    np.testing.assert_array_equal(scored.scores, scorer.score_batch(decoded.features).scores)


def test_a_batch_without_a_valid_row_has_no_scores(models):
    scorer = load_scorer(str(models))
    decoded = Decoder(scorer.feature_names).decode_batch([b"{", b""])
    scored = score_decoded(scorer, decoded)
    assert scored.scaled is None and scored.scores is None and scored.decoded.index == []
    assert (scored.clipped_training, scored.clipped_scaled, scored.out_of_range) == (0, 0, 0)
    assert [e.reason for _, e in scored.decoded.errors] == [e.reason for _, e in decoded.errors]


def test_taking_rows_is_scoring_those_rows_alone(batch):
    scorer, decoded = batch
    scored = score_decoded(scorer, decoded)
    keep = [0, 2]
    taken = scored.take(keep)
    assert taken.decoded.transaction_ids == [scored.decoded.transaction_ids[j] for j in keep]
    alone = scorer.score_batch(scored.decoded.features[keep])
    assert taken.scores is not None and taken.scaled is not None
    np.testing.assert_array_equal(taken.scores, alone.scores)
    np.testing.assert_array_equal(taken.scaled, alone.scaled)


@pytest.mark.parametrize("features", [False, True])
def test_score_payloads_are_encode_results_of_every_valid_row(batch, features):
    scorer, decoded = batch
    scored = score_decoded(scorer, decoded)
    d = scored.decoded
    assert scored.scaled is not None and scored.scores is not None
    times = {j: 1_000 + j for j in range(len(d.index))}
    payloads = score_payloads(scorer, d, scored.scaled, scored.scores, times, 7, 3, features)
    rows = range(len(scored.scores))
    assert payloads == encode_results(scorer, rows, d.transaction_ids, times, scored.scaled, d.features,
                                      scored.scores, 7, 3, features=features)  # fmt: skip
    assert [json.loads(p)["transaction_id"] for p in payloads] == d.transaction_ids
