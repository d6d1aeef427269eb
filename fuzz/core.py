"""Run one fuzz target with hypothesis: count inputs, collect failures, bound memory per example."""

from __future__ import annotations

import importlib
import time
import traceback
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed

MAX_SHOWN = 3  # distinct failures kept per target, each with its first input
# tracemalloc slows allocation several times over: the memory bound is checked on one example in
# MEMORY_EVERY (traced from the example's start to its end), the others run untraced.
MEMORY_EVERY = 40


@dataclass
class Failure:
    key: str  # exception type and where it was raised: one defect, however many inputs hit it
    message: str
    example: str
    count: int = 1


@dataclass
class Report:
    name: str
    examples: int = 0
    inputs: int = 0
    traced: int = 0  # examples whose memory was traced
    failures: int = 0
    peak_bytes: int = 0
    seconds: float = 0.0
    distinct: dict[str, Failure] = field(default_factory=dict)

    def fail(self, exc: BaseException, example: Any) -> None:
        self.failures += 1
        frames = traceback.extract_tb(exc.__traceback__)
        where = next((f"{Path(f.filename).name}:{f.lineno}" for f in reversed(frames)), "?")
        key = f"{type(exc).__name__} at {where}"
        if key in self.distinct:
            self.distinct[key].count += 1
        elif len(self.distinct) < 50:
            self.distinct[key] = Failure(key, str(exc)[:300], _shown(example))


def _shown(example: Any) -> str:
    text = repr(example)
    return text if len(text) <= 400 else text[:400] + f"... ({len(text)} chars)"


def load(name: str) -> ModuleType:
    return importlib.import_module(f"fuzz.{name}")


def run(name: str, workdir: Path, scale: float = 1.0, seed: int | None = None, examples: int | None = None,
        memory: bool = True) -> Report:  # fmt: skip
    """Run target ``name``: ``examples`` hypothesis examples (default its ``EXAMPLES`` times ``scale``),
    derandomized unless ``seed`` is given. Never raises for a failure: the report counts them."""
    target = load(name)
    report = Report(target.NAME)
    n = examples if examples is not None else max(1, int(target.EXAMPLES * scale))
    workdir.mkdir(parents=True, exist_ok=True)
    context = target.setup(workdir)
    bound = getattr(target, "MEMORY_BYTES", 64 << 20)

    @settings(
        max_examples=n, derandomize=seed is None, database=None, deadline=None, phases=[Phase.generate],
        suppress_health_check=list(HealthCheck), print_blob=False,
    )  # fmt: skip
    @given(target.strategy())
    def body(example: Any) -> None:
        report.examples += 1
        traced = memory and report.examples % MEMORY_EVERY == 1
        if traced:
            tracemalloc.start()
        try:
            report.inputs += target.check(context, example)
        except Exception as exc:  # noqa: BLE001 - a broken contract or an escaped exception: counted
            report.inputs += getattr(target, "inputs_of", lambda e: 1)(example)
            report.fail(exc, example)
            return
        finally:
            if traced:
                peak = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
        if traced:
            report.traced += 1
            report.peak_bytes = max(report.peak_bytes, peak)
            if peak > bound:
                try:
                    raise AssertionError(f"one example took {peak:,} bytes, bound {bound:,}")
                except AssertionError as exc:
                    report.fail(exc, example)

    if seed is not None:
        body = hypothesis_seed(seed)(body)
    started = time.monotonic()
    try:
        body()
    finally:
        close = getattr(target, "teardown", None)
        if close is not None:
            close(context)
    report.seconds = time.monotonic() - started
    return report
