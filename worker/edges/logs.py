"""Logging set-up for ``main`` and a throttle so a broker outage is logged once per interval.

Two formats: human-readable lines (the default) and ``json``, one object per line with ``time``
(UTC, ISO 8601), ``level``, ``logger``, ``message`` and, when the line carries them (``extra=``),
``topic``, ``partition``, ``offset``; a traceback goes into ``exception``. kafka-python logs every
failed connection attempt; ``OncePerInterval`` lets the first line of each kind through per
interval and says how many were held back.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
CONTEXT_FIELDS = ("topic", "partition", "offset", "model_version")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in messages and tracebacks are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in CONTEXT_FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                doc[key] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False, default=str)


class Throttle:
    """``ready(key)`` is True at most once per ``interval`` seconds per key; counts the rest."""

    def __init__(self, interval: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._last: dict[object, float] = {}
        self.suppressed: dict[object, int] = {}

    def ready(self, key: object) -> bool:
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self.suppressed[key] = self.suppressed.get(key, 0) + 1
            return False
        self._last[key] = now
        return True

    def take_suppressed(self, key: object) -> int:
        return self.suppressed.pop(key, 0)


class OncePerInterval(logging.Filter):
    """Lets each message template of the ``prefix`` loggers through once per interval."""

    def __init__(self, prefix: str, interval: float = 30.0) -> None:
        super().__init__()
        self.prefix = prefix
        self.throttle = Throttle(interval)

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.prefix):
            return True
        key = (record.name, record.msg)
        if not self.throttle.ready(key):
            return False
        held = self.throttle.take_suppressed(key)
        if held:
            record.msg = f"{record.msg} (and {held} more like it in the last {self.throttle.interval:.0f}s)"
        return True


def configure(level: str, interval: float = 30.0, fmt: str = "text") -> None:
    logging.basicConfig(level=level.upper(), format=FORMAT)
    if fmt.lower() == "json":
        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonFormatter())
    if level.upper() != "DEBUG":
        # kafka-python's INFO lines narrate every connection and rebalance step; keep its warnings, throttled
        # (a filter on a handler sees the records of every "kafka.*" logger; one on a logger would not).
        logging.getLogger("kafka").setLevel(logging.WARNING)
        for handler in logging.getLogger().handlers:
            handler.addFilter(OncePerInterval("kafka", interval))
