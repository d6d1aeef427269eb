"""The rule sets in use and their hot reload (docs/rules.md): ``<models>/RULES`` names the serving rule set,
``<models>/RULES_SHADOW`` one evaluated beside it that never decides. A rule set lives in
``<models>/rules/<version>/rules.toml`` (with ``signature.json`` beside it when signed: ``fraud-worker rules
publish``); its named lists are files of the lists directory, read again when they change.

Between batches the loop calls ``maybe_reload``: at most once per interval it stats the pointer and the list
files. A rule set or list that cannot be used (syntax, unknown field, type error, a bad signature, an unreadable
file) is refused with one log line and counted; what was serving keeps serving. At start a pointer that names a
rule set that cannot be used is fatal (``load_initial`` raises; the worker exits 3), as a bad CURRENT is.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from worker.core.bundle import read_current, sha256_hex
from worker.core.errors import BundleError, SignatureError
from worker.core.rule_lists import read_list
from worker.core.rules import RULES_FILE, RuleSet, RuleSetError, ServingRules, parse_rule_set
from worker.core.signing import TrustedKeys
from worker.edges.metrics import WorkerMetrics
from worker.models.watcher import PointerWatch

logger = logging.getLogger(__name__)
RULES_POINTER = "RULES"
SHADOW_RULES_POINTER = "RULES_SHADOW"
RULES_DIR = "rules"
SIGNATURE_FILE = "signature.json"


def rule_set_dir(models_dir: str | os.PathLike[str], version: str) -> Path:
    return Path(models_dir) / RULES_DIR / version


def load_published(models_dir: str, version: str, trusted_keys: TrustedKeys | None, compiled: bool = True) -> RuleSet:
    """The rule set ``version`` of the models directory, its signature checked with ``trusted_keys``."""
    where = rule_set_dir(models_dir, version)
    path = where / RULES_FILE
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RuleSetError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if trusted_keys is not None:
        try:
            doc = (where / SIGNATURE_FILE).read_bytes()
        except FileNotFoundError:
            doc = None
        except OSError as exc:
            raise RuleSetError(f"{where / SIGNATURE_FILE}: cannot read ({exc.strerror or exc})") from None
        others = {p.name: sha256_hex(p.read_bytes()) for p in where.iterdir() if p.name not in (SIGNATURE_FILE,)
                  and p.is_file()}  # fmt: skip
        try:
            trusted_keys.verify_files(f"rule set {version}", doc, others)
        except SignatureError as exc:
            raise RuleSetError(str(exc)) from None
    return parse_rule_set(data, str(path), version, compiled)


class _ListFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.seen: tuple[int, int, int] | None = None
        self.values: frozenset[str] | None = None

    def stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)


class RulesWatcher:
    """One role's rule set (``serving`` from RULES, ``shadow`` from RULES_SHADOW) and its lists."""

    def __init__(
        self,
        models_dir: str,
        lists_dir: str,
        metrics: WorkerMetrics,
        interval: float = 1.0,
        trusted_keys: TrustedKeys | None = None,
        role: str = "serving",
        compiled: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.models_dir, self.lists_dir, self.metrics, self.role = models_dir, Path(lists_dir), metrics, role
        self.trusted_keys, self.compiled, self.interval, self._clock = trusted_keys, compiled, interval, clock
        self.pointer = RULES_POINTER if role == "serving" else SHADOW_RULES_POINTER
        self._watch = PointerWatch(Path(models_dir) / self.pointer, interval, clock)
        self.rule_set: RuleSet | None = None
        self._lists: dict[str, _ListFile] = {}
        self._serving: ServingRules | None = None
        self._next_list_check = 0.0

    @property
    def serving(self) -> ServingRules | None:
        """The rule set in use with its lists' contents (None: none)."""
        return self._serving

    @property
    def version(self) -> str | None:
        return self.rule_set.version if self.rule_set is not None else None

    def load_initial(self) -> None:
        """Load what the pointer names, if it exists; ``RuleSetError`` (one line) if it cannot be used."""
        self._watch.mark()
        version = self._pointed()
        if version is None:
            self.metrics.set_rule_set(self.role, None, None)
            return
        rule_set = load_published(self.models_dir, version, self.trusted_keys, self.compiled)
        lists = self._read_lists(rule_set)
        self._use(rule_set, lists, None)

    def maybe_reload(self) -> bool:
        """A new rule set or list contents in use; True when what serves changed."""
        changed = False
        if self._watch.changed():
            changed = self._reload_rule_set()
        if self.rule_set is not None and not changed and self._clock() >= self._next_list_check:
            self._next_list_check = self._clock() + self.interval
            changed = self._reload_lists()
        return changed

    def _pointed(self) -> str | None:
        try:
            return read_current(self.models_dir, self.pointer)
        except BundleError as exc:
            raise RuleSetError(f"{Path(self.models_dir) / self.pointer}: {exc}") from None

    def _reload_rule_set(self) -> bool:
        try:
            version = self._pointed()
            if version is None:
                if self.rule_set is not None:
                    logger.info("%s removed: the %s rule set %s is no longer used", self.pointer, self.role,
                                self.version)  # fmt: skip
                    self.metrics.set_rule_set(self.role, None, self.version)
                    self.rule_set, self._serving, self._lists = None, None, {}
                    return True
                return False
            if version == self.version:
                return False
            rule_set = load_published(self.models_dir, version, self.trusted_keys, self.compiled)
            lists = self._read_lists(rule_set)
        except RuleSetError as exc:
            self.metrics.rule_set_reloads.labels(role=self.role, result="failed").inc()
            logger.error("%s rule set refused, still using %s: %s", self.role, self.version or "none", exc)
            return False
        except Exception as exc:  # noqa: BLE001 - a defect in a check must not stop a serving worker
            self.metrics.rule_set_reloads.labels(role=self.role, result="failed").inc()
            logger.error("%s rule set refused, still using %s: unexpected %s", self.role, self.version or "none",
                         type(exc).__name__, exc_info=True)  # fmt: skip
            return False
        old = self.version
        self._use(rule_set, lists, old)
        self.metrics.rule_set_reloads.labels(role=self.role, result="ok").inc()
        logger.info("%s rule set switched from %s to %s (%d rules)", self.role, old or "none", rule_set.version,
                    len(rule_set.rules))  # fmt: skip
        return True

    def _read_lists(self, rule_set: RuleSet) -> dict[str, _ListFile]:
        files = {}
        for name, file in rule_set.lists.items():
            for result in ("ok", "failed"):  # every series from 0, so that increase() sees the first failure
                self.metrics.rule_list_reloads.labels(list=name, result=result)
            lf = _ListFile(self.lists_dir / file)
            lf.seen = lf.stat()
            try:
                lf.values = read_list(str(lf.path))
            except RuleSetError as exc:
                self.metrics.rule_list_reloads.labels(list=name, result="failed").inc()
                raise RuleSetError(f"{self.role} rule set {rule_set.version}: list {name!r}: {exc}") from None
            self.metrics.rule_list_reloads.labels(list=name, result="ok").inc()
            files[name] = lf
        return files

    def _reload_lists(self) -> bool:
        assert self.rule_set is not None
        changed = False
        for name, lf in self._lists.items():
            key = lf.stat()
            if key == lf.seen:
                continue
            lf.seen = key
            try:
                values = read_list(str(lf.path))
            except RuleSetError as exc:
                self.metrics.rule_list_reloads.labels(list=name, result="failed").inc()
                logger.error("list %r refused, still using its %d values: %s", name, len(lf.values or ()), exc)
                continue
            self.metrics.rule_list_reloads.labels(list=name, result="ok").inc()
            lf.values = values
            changed = True
            logger.info("list %r reloaded: %d values", name, len(values))
        if changed:
            self._serving = ServingRules(self.rule_set, self._contents())
        return changed

    def _contents(self) -> dict[str, frozenset[str]]:
        contents = {name: lf.values or frozenset() for name, lf in self._lists.items()}
        for name, values in contents.items():
            self.metrics.rule_list_entries.labels(list=name).set(len(values))
        return contents

    def _use(self, rule_set: RuleSet, lists: dict[str, _ListFile], old: str | None) -> None:
        """Serve ``rule_set`` (replacing version ``old``)."""
        self.rule_set, self._lists = rule_set, lists
        self._serving = ServingRules(rule_set, self._contents())
        self._next_list_check = self._clock() + self.interval
        interpreted = sum(1 for r in rule_set.rules if not r.compiled)
        self.metrics.set_rule_set(self.role, rule_set.version, old, [(r.id, r.action) for r in rule_set.rules],
                                  interpreted)  # fmt: skip
        for r in rule_set.rules:
            if not r.compiled:
                logger.warning("rule %r of rule set %s is evaluated row by row by rule-engine, not compiled: %s",
                               r.id, rule_set.version, r.why)  # fmt: skip
