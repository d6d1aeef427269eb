"""Run ``fraud-feedback`` as a real subprocess (``python -m worker.programs.fraud_feedback``) and read its metrics."""

from __future__ import annotations

import os
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence

from prometheus_client.parser import text_string_to_metric_families

from tests.support.workers import LoggedProcess, free_port

OUTCOMES = ("tp", "fp", "fn", "tn")


class FeedbackProcess(LoggedProcess):
    def __init__(self, bootstrap: str, scores_topic: str, labels_topic: str, group: str, state_dir,
                 extra: Sequence[str] = ()) -> None:  # fmt: skip
        self.port = free_port()
        args = [
            sys.executable, "-m", "worker.programs.fraud_feedback", "--bootstrap-servers", bootstrap,
            "--scores-topic", scores_topic,
            "--labels-topic", labels_topic, "--group-id", group, "--state-dir", str(state_dir),
            "--metrics-port", str(self.port), *extra,
        ]  # fmt: skip
        super().__init__(args, {k: v for k, v in os.environ.items() if not k.startswith("FRAUD_")}, "fraud-feedback-")

    def start(self) -> FeedbackProcess:
        return super().start()

    def samples(self) -> list:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as resp:
                text = resp.read().decode()
        except (urllib.error.URLError, OSError):
            return []
        return [s for family in text_string_to_metric_families(text) for s in family.samples]

    def outcomes(self) -> dict[tuple[str, str], float]:
        return {(s.labels["model_version"], s.labels["outcome"]): s.value for s in self.samples()
                if s.name == "fraud_feedback_outcomes"}  # fmt: skip

    def metric(self, name: str, labels: dict | None = None) -> float:
        for s in self.samples():
            if s.name == name and (labels is None or all(s.labels.get(k) == v for k, v in labels.items())):
                return s.value
        return 0.0

    def rule_figures(self) -> dict[str, dict[tuple[str, str, str], float]]:
        """The per-rule and per-action figures: ``resolved``, ``precision``, ``recall`` (from
        ``fraud_feedback_rule_*``) and ``action_resolved``, ``action_precision``, ``action_recall`` (from
        ``fraud_feedback_action_*``), each (role, rule_set, rule or action) -> value."""
        out: dict[str, dict[tuple[str, str, str], float]] = {}
        for s in self.samples():
            for kind, prefix in (("rule", ""), ("action", "action_")):
                head = f"fraud_feedback_{kind}_"
                if s.name.startswith(head):
                    key = (s.labels["role"], s.labels["rule_set"], s.labels[kind])
                    out.setdefault(prefix + s.name[len(head) :], {})[key] = s.value
        return out

    def wait_records(self, at_least: float, timeout: float = 120.0) -> None:
        """Until it has read at least this many records (scores and labels together)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"fraud-feedback exited with {self.proc.returncode}:\n{self.output()[-3000:]}")
            got = sum(s.value for s in self.samples() if s.name == "fraud_feedback_records_total")
            if got >= at_least:
                return
            time.sleep(0.1)
        raise AssertionError(f"fraud-feedback read fewer than {at_least} records:\n{self.output()[-3000:]}")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)


def totals(processes: Sequence[FeedbackProcess]) -> dict[str, float]:
    """The outcome counts summed over versions and over the instances."""
    out = dict.fromkeys(OUTCOMES, 0.0)
    for p in processes:
        for (_, outcome), n in p.outcomes().items():
            out[outcome] += n
    return out


def wait_totals(processes: Sequence[FeedbackProcess], expected: dict[str, int], timeout: float = 180.0) -> dict:
    """Until the instances' summed counts equal ``expected`` (they only settle there once all is read)."""
    deadline = time.monotonic() + timeout
    got: dict = {}
    while time.monotonic() < deadline:
        for p in processes:
            if p.proc.poll() is not None:
                raise AssertionError(f"fraud-feedback exited with {p.proc.returncode}:\n{p.output()[-3000:]}")
        got = totals(processes)
        if got == {k: float(v) for k, v in expected.items()}:
            return got
        time.sleep(0.25)
    logs = "\n".join(p.output()[-1500:] for p in processes)
    raise AssertionError(f"outcome counts {got}, expected {expected}\n{logs}")
