"""The serving model and its hot reload from ``<models>/CURRENT``.

Between batches the loop calls ``maybe_reload``; at most once per interval it stats CURRENT and,
when the file changed and names another version, loads that bundle with ``load_scorer`` (sha256,
feature count, probe score). A bundle that fails is counted and logged once, and the old scorer
keeps serving; it is tried again only when CURRENT changes again.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from worker.bundle import CURRENT_FILE, read_current
from worker.errors import BundleError
from worker.metrics import WorkerMetrics
from worker.scoring import Scorer, load_scorer

logger = logging.getLogger(__name__)


class ModelWatcher:
    def __init__(
        self,
        models_dir: str,
        metrics: WorkerMetrics,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        loader: Callable[[str, str | None], Scorer] = load_scorer,
    ) -> None:
        self.models_dir = models_dir
        self.metrics = metrics
        self.interval = interval
        self._clock = clock
        self._loader = loader
        self._scorer: Scorer | None = None
        self._seen: tuple[int, int, int] | None = None
        self._next_check = 0.0

    @property
    def scorer(self) -> Scorer:
        if self._scorer is None:
            raise BundleError("no model loaded")
        return self._scorer

    def load_initial(self) -> Scorer:
        """Load CURRENT's bundle or raise ``BundleError`` (the worker cannot start without one)."""
        self._seen = self._stat()
        scorer = self._loader(self.models_dir, None)
        self._serve(scorer)
        return scorer

    def maybe_reload(self) -> bool:
        """Switch to CURRENT's version if it changed and passes its checks; True when switched."""
        now = self._clock()
        if now < self._next_check:
            return False
        self._next_check = now + self.interval
        key = self._stat()
        if key == self._seen:
            return False
        self._seen = key
        try:
            version = read_current(self.models_dir)
            if version is None:
                logger.warning("%s disappeared; still serving %s", Path(self.models_dir) / CURRENT_FILE, self.version)
                return False
            if version == self.version:
                return False
            scorer = self._loader(self.models_dir, version)
        except BundleError as exc:
            self.metrics.model_reloads.labels(result="failed").inc()
            logger.error("model reload refused, still serving %s: %s", self.version, exc)
            return False
        old = self.version
        self._serve(scorer)
        self.metrics.model_reloads.labels(result="ok").inc()
        logger.info("model switched from %s to %s (threshold %.4f)", old, scorer.version, scorer.threshold)
        return True

    @property
    def version(self) -> str | None:
        return self._scorer.version if self._scorer is not None else None

    def _serve(self, scorer: Scorer) -> None:
        self._scorer = scorer
        self.metrics.set_model(scorer.version, scorer.bundle.manifest.model_sha256, scorer.threshold)

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(Path(self.models_dir) / CURRENT_FILE)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)
