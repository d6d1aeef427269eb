"""The manifest and signature loader (worker/core/bundle.py, worker/core/signing.py): a good signed bundle
whose manifest.json and signature.json are mutated, loaded with and without trusted keys.

Contract: loading raises ``BundleError`` (``SignatureError`` is one) or returns a bundle, nothing
else; with the trusted key, a manifest changed in any byte is refused; a manifest
loaded without keys passes ``Manifest.validate`` with finite numbers, and when ``load_scorer``
takes it, the scorer gives finite scores in [0, 1] for ordinary and extreme events.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import strategies as st

from fuzz import fixtures
from fuzz.gen import Mutator, example_strategy

NAME = "bundle"
MIN_INPUTS = 10_000
EXAMPLES = 10_200
MEMORY_BYTES = 96 << 20
TOKEN = re.compile(rb'-?\d+(\.\d+)?([eE][-+]?\d+)?|"(?:[^"\\]|\\.)*"|\[\]|\{\}|true|false|null')


def strategy() -> st.SearchStrategy:
    return st.tuples(example_strategy, st.sampled_from(("manifest", "manifest", "manifest", "signature", "both")))


def setup(workdir: Path) -> Any:
    from worker.core.signing import load_trusted_keys

    models, public = fixtures.models(workdir)
    work = workdir / "bundle-target"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(models, work)
    bundle = work / fixtures.VERSION
    good = {name: (bundle / name).read_bytes() for name in ("manifest.json", "signature.json")}
    return work, bundle, good, load_trusted_keys(str(public))


def mutate(m: Mutator, raw: bytes) -> bytes:
    r = m.rng.random()
    if r < 0.45:  # one token (a number, a string, a literal) anywhere in the tree replaced
        spans = [x.span() for x in TOKEN.finditer(raw)]
        if spans:
            a, b = m.rng.choice(spans)
            return raw[:a] + m.value().encode("utf-8", "surrogatepass") + raw[b:]
    if r < 0.85:  # top-level fields: replaced, dropped, duplicated, added
        doc = json.loads(raw)
        return m.document(doc)
    return m.bytes_mutation(raw)


def check(context: Any, example: Any) -> int:
    from worker.core.bundle import load_bundle
    from worker.core.errors import BundleError
    from worker.core.scoring import load_scorer

    work, bundle, good, trusted = context
    (seed, extra), which = example
    m = Mutator(seed, extra)
    files = dict(good)
    for name in ("manifest.json", "signature.json"):
        if which in (name.split(".")[0], "both"):
            files[name] = mutate(m, good[name])
    try:
        for name, data in files.items():
            (bundle / name).write_bytes(data)
        try:
            load_bundle(work, fixtures.VERSION, trusted)
            # (signature.json may change and still verify: whitespace, a field it does not read)
            assert files["manifest.json"] == good["manifest.json"], "a changed manifest passed the signature check"
        except BundleError:
            pass
        try:
            loaded = load_bundle(work, fixtures.VERSION)
        except BundleError:
            return 1
        loaded.manifest.validate()
        for key in ("scaler_mean", "scaler_scale", "weights"):
            assert all(math.isfinite(x) for x in getattr(loaded.manifest, key)), key
        assert math.isfinite(loaded.manifest.bias) and 0 <= loaded.manifest.threshold <= 1
        try:
            scorer = load_scorer(str(work), fixtures.VERSION)
        except BundleError:
            return 1
        n = len(scorer.feature_names)
        events = np.array([[0.0] * n, [3.4e38] * n, [-3.4e38] * n, [1.0, -1.0] * (n // 2) + [0.0] * (n % 2)],
                          dtype=np.float32)  # fmt: skip
        scores = scorer.score_scaled(scorer.scale(events))
        assert bool(np.isfinite(scores).all()) and bool(((scores >= 0) & (scores <= 1)).all()), scores
        return 1
    finally:
        for name, data in good.items():
            (bundle / name).write_bytes(data)
