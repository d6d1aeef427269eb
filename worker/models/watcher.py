"""The serving model and its hot reload from ``<models>/CURRENT``.

Between batches the loop calls ``maybe_reload``; at most once per interval it stats CURRENT and,
when the file changed and names another version, loads that bundle with ``load_scorer`` (sha256,
feature count, probe score). A bundle that fails is counted and logged once, and the old scorer
keeps serving; it is tried again only when CURRENT changes again. With ``trusted_keys`` every
bundle, the first one too, must be signed by one of them (``worker.core.signing``); with ``min_version``
none may be older than it; a refused signature or rollback is also counted by its reason. An
unexpected error while loading a bundle is refused the same way on hot reload (logged with its
traceback): a bad bundle never stops a worker that is serving.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from worker.core.bundle import CURRENT_FILE, MANIFEST_FILE, MODEL_FILE, SIGNATURE_FILE, read_current
from worker.core.errors import BundleError, SignatureError
from worker.core.scoring import Scorer, load_scorer
from worker.edges.metrics import WorkerMetrics

if TYPE_CHECKING:
    from worker.core.signing import TrustedKeys

logger = logging.getLogger(__name__)


class PointerWatch:
    """A pointer file of the models directory (CURRENT, CHALLENGER), looked at at most once per interval.

    ``changed`` stats it (no read) when the interval is up and says whether its inode, mtime or size
    differ from the last look; ``mark`` takes the current state as seen.
    """

    def __init__(self, path: Path, interval: float, clock: Callable[[], float]) -> None:
        self.path, self.interval, self._clock = path, interval, clock
        self._seen: tuple[int, int, int] | None = None
        self._next_check = 0.0

    def mark(self) -> None:
        self._seen = self._stat()

    def changed(self) -> bool:
        now = self._clock()
        if now < self._next_check:
            return False
        self._next_check = now + self.interval
        key = self._stat()
        if key == self._seen:
            return False
        self._seen = key
        return True

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.lstat(self.path)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)


class ModelWatcher:
    def __init__(
        self,
        models_dir: str,
        metrics: WorkerMetrics,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        loader: Callable[[str, str | None], Scorer] | None = None,
        trusted_keys: TrustedKeys | None = None,
        min_version: str | None = None,
    ) -> None:
        self.models_dir = models_dir
        self.metrics = metrics
        self.interval = interval
        self.trusted_keys = trusted_keys
        self.min_version = min_version
        self._loader = loader or functools.partial(load_scorer, trusted_keys=trusted_keys, min_version=min_version)
        self._scorer: Scorer | None = None
        self._pointer = PointerWatch(Path(models_dir) / CURRENT_FILE, interval, clock)

    @property
    def scorer(self) -> Scorer:
        if self._scorer is None:
            raise BundleError("no model loaded")
        return self._scorer

    def load_initial(self) -> Scorer:
        """Load CURRENT's bundle or raise ``BundleError`` (the worker cannot start without one)."""
        self._pointer.mark()
        t0 = time.perf_counter()
        scorer = self._loader(self.models_dir, None)
        self._serve(scorer, time.perf_counter() - t0)
        return scorer

    def maybe_reload(self) -> bool:
        """Switch to CURRENT's version if it changed and passes its checks; True when switched."""
        if not self._pointer.changed():
            return False
        try:
            version = read_current(self.models_dir)
            if version is None:
                logger.warning("%s disappeared; still serving %s", Path(self.models_dir) / CURRENT_FILE, self.version)
                return False
            if version == self.version:
                return False
            t0 = time.perf_counter()
            scorer = self._loader(self.models_dir, version)
            seconds = time.perf_counter() - t0
        except BundleError as exc:
            self.metrics.model_reloads.labels(result="failed").inc()
            if isinstance(exc, SignatureError):
                self.metrics.model_signature_failures.labels(reason=exc.reason).inc()
            logger.error("model reload refused, still serving %s: %s", self.version, exc)
            return False
        except Exception as exc:  # noqa: BLE001 - a defect in a check must not stop a serving worker
            self.metrics.model_reloads.labels(result="failed").inc()
            logger.error("model reload refused, still serving %s: unexpected %s", self.version, type(exc).__name__,
                         exc_info=True)  # fmt: skip
            return False
        old = self.version
        self._serve(scorer, seconds)
        self.metrics.model_reloads.labels(result="ok").inc()
        logger.info("model switched from %s to %s (threshold %.4f%s)", old, scorer.version, scorer.threshold,
                    signed_by(scorer))  # fmt: skip
        return True

    def files_problem(self) -> str | None:
        """Why the serving model could not be loaded from disk again (CURRENT or its bundle gone), or None.

        Two stats, no reads: safe to call from the probe thread at any time.
        """
        if self._scorer is None:
            return None
        models = Path(self.models_dir)
        if not (models / CURRENT_FILE).is_file():
            return f"{models / CURRENT_FILE} is missing"
        bundle = models / self._scorer.version
        # With trusted keys a restart would need the signature too.
        signature = () if self.trusted_keys is None else (SIGNATURE_FILE,)
        for name in (MANIFEST_FILE, MODEL_FILE, *signature):
            if not (bundle / name).is_file():
                return f"{bundle / name} of the serving model is missing"
        return None

    @property
    def version(self) -> str | None:
        return self._scorer.version if self._scorer is not None else None

    def _serve(self, scorer: Scorer, load_seconds: float) -> None:
        self._scorer = scorer
        m = scorer.bundle.manifest
        self.metrics.set_model(m.version, m.model_sha256, scorer.threshold, m.score_histogram, load_seconds)


def signed_by(scorer: Scorer) -> str:
    """The end of a log line about ``scorer``: which key signed it, if its signature was checked."""
    key = scorer.bundle.signed_by
    return f", signed by key {key}" if key else ""
