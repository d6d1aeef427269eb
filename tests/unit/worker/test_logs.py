"""Log formats: human-readable lines by default, one JSON object per line with --log-format json."""

from __future__ import annotations

import io
import json
import logging

import pytest

from worker.core.errors import ConfigError
from worker.edges.config import load_config
from worker.edges.logs import FORMAT, JsonFormatter


def _emit(formatter: logging.Formatter, *args, **kwargs) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    log = logging.getLogger("worker.test-logs")
    log.propagate, log.level = False, logging.INFO
    log.addHandler(handler)
    try:
        log.warning(*args, **kwargs)
        try:
            raise ValueError("boom\nsecond line")
        except ValueError:
            log.exception("failed")
    finally:
        log.removeHandler(handler)
    return stream.getvalue()


def test_json_lines_carry_level_logger_message_and_record_coordinates():
    out = _emit(JsonFormatter(), "dead-lettered %s[%s]@%s", "transactions", 2, 41,
                extra={"topic": "transactions", "partition": 2, "offset": 41})  # fmt: skip
    lines = out.splitlines()
    assert len(lines) == 2  # the traceback stays inside its line
    first, second = (json.loads(line) for line in lines)
    assert first["level"] == "WARNING" and first["logger"] == "worker.test-logs"
    assert first["message"] == "dead-lettered transactions[2]@41"
    assert (first["topic"], first["partition"], first["offset"]) == ("transactions", 2, 41)
    assert first["time"].endswith("+00:00")
    assert second["level"] == "ERROR" and "ValueError: boom" in second["exception"]


def test_text_is_the_default_and_json_is_chosen_by_flag_or_environment():
    assert load_config([], {}).log_format == "text"
    assert load_config(["--log-format", "json"], {}).log_format == "json"
    assert load_config([], {"FRAUD_LOG_FORMAT": "json"}).log_format == "json"
    with pytest.raises(ConfigError, match="log_format"):
        load_config(["--log-format", "yaml"], {})
    text = _emit(logging.Formatter(FORMAT), "plain %s", "line").splitlines()[0]
    assert text.endswith("WARNING worker.test-logs: plain line")
