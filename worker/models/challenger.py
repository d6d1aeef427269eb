"""The shadow challenger's model: ``models/CHALLENGER``, watched between batches beside the champion.

``ChallengerWatcher`` watches the CHALLENGER pointer between batches, as ``ModelWatcher`` watches
CURRENT, with the same checks (``load_scorer``: sha256, probe, signatures with trusted keys). A
challenger that fails them, or whose features are not the champion's (a batch is decoded once, for
the champion), is refused, counted (``fraud_shadow_reloads_total{result="failed"}``) and logged;
the champion is never touched, and a challenger already in shadow keeps its place. Removing
CHALLENGER ends the shadow. Its scoring of a batch: worker/pipeline/shadow.py.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from worker.core.bundle import CHALLENGER_FILE, read_current
from worker.core.errors import BundleError, SignatureError
from worker.core.scoring import Scorer, load_scorer
from worker.edges.metrics import WorkerMetrics
from worker.models.watcher import PointerWatch

if TYPE_CHECKING:
    from worker.core.signing import TrustedKeys

logger = logging.getLogger(__name__)


class ChallengerWatcher:
    def __init__(
        self,
        models_dir: str,
        metrics: WorkerMetrics,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        trusted_keys: TrustedKeys | None = None,
        loader: Callable[[str, str | None], Scorer] | None = None,
        min_version: str | None = None,
    ) -> None:
        self.models_dir, self.metrics, self.interval = models_dir, metrics, interval
        self._loader = loader or functools.partial(load_scorer, trusted_keys=trusted_keys, min_version=min_version)
        self._scorer: Scorer | None = None
        self._pointer = PointerWatch(Path(models_dir) / CHALLENGER_FILE, interval, clock)

    @property
    def scorer(self) -> Scorer | None:
        return self._scorer

    def for_champion(self, champion: Scorer) -> Scorer | None:
        """The challenger, if it can score what was decoded for ``champion`` (the same features)."""
        s = self._scorer
        return s if s is not None and tuple(s.feature_names) == tuple(champion.feature_names) else None

    def maybe_reload(self, champion: Scorer) -> bool:
        """Follow CHALLENGER if it changed: True when the challenger in shadow changed (or ended)."""
        if not self._pointer.changed():
            return False
        try:
            version = read_current(self.models_dir, CHALLENGER_FILE)
        except BundleError as exc:
            self._refused(str(exc))
            return False
        if version is None:
            if self._scorer is not None:
                logger.info("%s removed: challenger %s leaves the shadow", CHALLENGER_FILE, self._scorer.version)
                self._scorer = None
                self.metrics.set_shadow_model(None)
                return True
            return False
        if self._scorer is not None and version == self._scorer.version:
            return False
        try:
            scorer = self._loader(self.models_dir, version)
        except BundleError as exc:
            if isinstance(exc, SignatureError):
                self.metrics.model_signature_failures.labels(reason=exc.reason).inc()
            self._refused(f"challenger {version}: {exc}")
            return False
        except Exception as exc:  # noqa: BLE001 - a defect in a check must not stop the worker
            logger.debug("challenger %s failed to load", version, exc_info=True)
            self._refused(f"challenger {version}: unexpected {type(exc).__name__}: {str(exc)[:200]!r}")
            return False
        if tuple(scorer.feature_names) != tuple(champion.feature_names):
            self._refused(
                f"challenger {version} has other features than the champion {champion.version} "
                f"({len(scorer.feature_names)} vs {len(champion.feature_names)}): a shadow scores the champion's rows"
            )
            return False
        self._scorer = scorer
        m = scorer.bundle.manifest
        self.metrics.set_shadow_model((m.version, m.model_sha256))
        self.metrics.shadow_reloads.labels(result="ok").inc()
        logger.info("challenger %s in shadow beside %s (threshold %.4f)", version, champion.version, scorer.threshold)
        return True

    def _refused(self, why: str) -> None:
        self.metrics.shadow_reloads.labels(result="failed").inc()
        kept = f"; {self._scorer.version} stays in shadow" if self._scorer is not None else ""
        logger.error("challenger refused (the champion is untouched%s): %s", kept, why)
