"""What a score record carries beside the score when the bundle has a feature spec (docs/formats.md,
"Score records"): pure, no Kafka.

- ``entity_time`` and ``entities``, when the spec reads labels (``fraud_count``, ``fraud_rate``): the
  event's time as the spec reads it (epoch ms) and the key of each entity whose risk the spec reads. From
  them ``fraud-feedback`` makes the fraud entries of those entities when the event's label comes
  (worker/core/risk.py). A key longer than ``MAX_KEY_LENGTH`` is left out: it gets no entries.
- ``inputs``, when score records carry features (``scores_include_features``): the raw values of the
  fields the spec reads and of its time field, as the event had them, so that ``fraud-feedback export``
  writes examples the next model can be trained on with the same spec.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from worker.core.features import FeatureSpec, InputReader, key_of, valid_time
from worker.core.risk import MAX_KEY_LENGTH

_encode = msgspec.json.Encoder().encode


class ScoreContext:
    def __init__(self, spec: FeatureSpec, inputs: bool) -> None:
        self.reader = InputReader(spec)
        self.names = spec.input_fields
        self.time_field, self.unit = spec.time_field, spec.time_unit
        self.to_ms = 1000 if spec.time_unit == "s" else 1
        self.risk = [(f, spec.input_fields.index(f)) for f in spec.risk_fields]
        self.inputs = inputs

    @property
    def active(self) -> bool:
        return bool(self.risk) or self.inputs

    def fragments(self, values: Sequence[bytes]) -> list[bytes]:
        """Per event value, the JSON members to add to its score record: ``,"entity_time":..,"entities":{..}``
        and ``,"inputs":{..}`` (each only when it applies), or ``b""``."""
        out = []
        for value in values:
            raw_time, fields = self.reader.read(value)
            members: dict[str, Any] = {}
            if self.risk:
                t = valid_time(raw_time, self.unit)
                if t is not None:
                    members["entity_time"] = round(t * self.to_ms)
                    entities = {f: k for f, at in self.risk
                                if (k := key_of(fields[at])) is not None and len(k) <= MAX_KEY_LENGTH}  # fmt: skip
                    members["entities"] = entities
            if self.inputs:
                members["inputs"] = {**dict(zip(self.names, map(_plain, fields), strict=True)),
                                     self.time_field: _plain(raw_time)}  # fmt: skip
            out.append(b"," + _encode(members)[1:-1] if members else b"")
        return out


def _plain(value: Any) -> Any:
    """A JSON scalar as the event had it; anything else (an object, a list) as null."""
    return value if value is None or isinstance(value, (str, int, float, bool)) else None
