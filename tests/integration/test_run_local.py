"""``scripts/run-local`` (``make run``) as a person uses it: start, wait for alerts, Ctrl-C, nothing left.

Each run starts its own broker (``scripts/local-kafka`` on free ports, its own state directory),
trains a model on synthetic data into a temporary models directory, and runs the worker,
fraud-feedback, the replay (each row's label 5 s after its event) and the alert printer, whose
summary line comes to show precision and recall on the labelled traffic. Ctrl-C comes two ways:
SIGINT to the script's whole process group, with no terminal (as a process supervisor sends it);
and ``make run | tee LOG`` in a pseudo-terminal, whose INTR character makes the terminal send
SIGINT to its foreground process group. Afterwards no process either started may remain, the
broker and fraud-feedback included, and a Ctrl-C ends it with status 0.
"""

from __future__ import annotations

import os
import pty
import re
import shlex
import signal
import subprocess
import sys
import termios
import threading
import time
import uuid
from pathlib import Path

import pytest

from scripts.local_kafka import free_port_pair
from tests.support.workers import free_port

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
# The summary line's part from fraud-feedback, once labelled transactions are resolved: both figures defined.
# An alert's line: its time, its decision (REVIEW, BLOCK, a rule set's own action), the transaction, the score.
ALERT_LINE = re.compile(r"\d\d:\d\d:\d\d [A-Z][A-Z0-9_]* \S+  score ")
LABELLED = re.compile(r"labelled: precision (\d\.\d\d) recall (\d\.\d\d) \(([^,()]+), ([\d,]+) resolved\)")


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (by parent pid)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def wait_for_labelled(text, exited, timeout: float = 90.0) -> re.Match:
    """Until a summary line shows precision and recall (labels come 5 s after their events, fraud-feedback
    and the summary refresh every 5 s); the figures must be ratios."""
    deadline = time.monotonic() + timeout
    while not (found := LABELLED.search(text())):
        assert not exited(), f"run-local exited early:\n{text()[-4000:]}"
        assert time.monotonic() < deadline, f"no precision and recall within {timeout:.0f} s:\n{text()[-4000:]}"
        time.sleep(0.5)
    assert 0 <= float(found.group(1)) <= 1 and 0 <= float(found.group(2)) <= 1, found.group(0)
    assert int(found.group(4).replace(",", "")) > 0, found.group(0)
    return found


def assert_feedback_stopped_cleanly(out: str, run_dir: Path) -> None:
    """fraud-feedback took its SIGTERM from the clean-up and ended by itself, without a traceback."""
    assert "fraud-feedback started (pid" in out, out[-3000:]
    assert "stopping (replay, alert printer, fraud-feedback, worker" in out, out[-3000:]
    assert "did not stop within" not in out, out[-3000:]
    log = (run_dir / "feedback.log").read_text()
    assert "joining" in log and "Traceback" not in log, log[-3000:]


@pytest.mark.timeout(300)
def test_run_local_shows_alerts_and_ctrl_c_leaves_nothing_behind(tmp_path: Path) -> None:
    kafka_port, metrics_port, feedback_port = free_port_pair(), free_port(), free_port()
    state = tmp_path / "kafka"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUD_") and k != "KAFKA_BOOTSTRAP_SERVERS"}
    env.update(
        KAFKA_PORT=str(kafka_port), KAFKA_STATE_DIR=str(state), VENV=str(Path(sys.executable).parent.parent),
        DATA="synthetic", RATE="500", FEEDBACK_METRICS_PORT=str(feedback_port),
    )  # fmt: skip
    args = [
        str(REPO / "scripts" / "run-local"), "--metrics-port", str(metrics_port),
        "--models-dir", str(tmp_path / "models"), "--run-dir", str(tmp_path / "runs"),
    ]  # fmt: skip
    proc = subprocess.Popen(
        args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    started: set[int] = set()
    try:
        _run_and_check(proc, lines, reader, state, tmp_path, metrics_port, feedback_port, started)
    finally:
        # Whatever a failed run left behind (run-local killed before its own cleanup ran: the worker
        # and the broker run in sessions of their own) must not outlive the test.
        if (state / "broker.pid").exists():
            started.add(int((state / "broker.pid").read_text()))
        for pid in started:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def _run_and_check(proc, lines, reader, state, tmp_path, metrics_port, feedback_port, started) -> None:
    broker_pid = None
    try:
        deadline = time.monotonic() + 180
        while not any(ALERT_LINE.search(line) for line in lines):
            assert proc.poll() is None, f"run-local exited with {proc.returncode}:\n{''.join(lines)[-4000:]}"
            assert time.monotonic() < deadline, f"no alert within 180 s:\n{''.join(lines)[-4000:]}"
            started |= descendants(proc.pid)
            if broker_pid is None and (state / "broker.pid").exists():
                broker_pid = int((state / "broker.pid").read_text())
            time.sleep(0.5)
        time.sleep(6)  # let a summary line come
        started |= descendants(proc.pid)
        assert broker_pid is not None and alive(broker_pid)
        out = "".join(lines)
        assert f"http://127.0.0.1:{metrics_port}/metrics" in out
        assert f"http://127.0.0.1:{feedback_port}/metrics" in out
        assert "dead-lettered" in out  # the running summary from the worker's /metrics
        # Then precision and recall from fraud-feedback, for the model the run trained and serves.
        found = wait_for_labelled(lambda: "".join(lines), lambda: proc.poll() is not None)
        version = (tmp_path / "models" / "CURRENT").read_text().strip()
        assert found.group(3) == version, found.group(0)
        started |= descendants(proc.pid)
        assert any("fraud-feedback --bootstrap-servers" in cmdline(p) for p in started), "fraud-feedback never ran"

        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        try:
            status = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"run-local still running 60 s after Ctrl-C:\n{''.join(lines)[-3000:]}") from None
        assert status == 0  # Ctrl-C is how a run ends: a clean stop is a success
    finally:
        if proc.poll() is None:  # a failed check: let run-local clean up as after a Ctrl-C first
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        reader.join(timeout=5)
    out = "".join(lines)
    assert "run-local: stopped" in out, out[-3000:]
    deadline = time.monotonic() + 10
    while (left := [p for p in {*started, broker_pid} if alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"processes left behind: {[Path(f'/proc/{p}/cmdline').read_bytes() for p in left]}"
    assert "worker stopped" in (tmp_path / "runs" / "worker.log").read_text()  # drained, not killed
    assert_feedback_stopped_cleanly(out, tmp_path / "runs")


def marked(marker: str) -> dict[int, str]:
    """Live processes whose environment holds ``marker`` (a ``KEY=VALUE``), by pid, with their command lines."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone, or not ours to read
            continue
        if marker.encode() in environ.split(b"\0") and alive(int(entry.name)):
            found[int(entry.name)] = cmdline
    return found


class Terminal:
    """``bash -c COMMAND`` in a pseudo-terminal it has as its controlling terminal; output read as it comes."""

    def __init__(self, command: str, env: dict[str, str]) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: the session leader, with the pty's slave as its terminal
            try:
                os.chdir(REPO)
                os.execvpe("bash", ["bash", "-c", command], env)
            finally:
                os._exit(127)
        self.chunks: list[bytes] = []
        self.status: int | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.fd, 65536)
            except OSError:  # EIO: every holder of the slave side has closed it
                return
            if not data:
                return
            self.chunks.append(data)

    @property
    def output(self) -> str:
        return b"".join(self.chunks).decode(errors="replace")

    def ctrl_c(self) -> None:
        """Type the terminal's INTR character: it sends SIGINT to the terminal's foreground process group."""
        os.write(self.fd, termios.tcgetattr(self.fd)[6][termios.VINTR])

    def wait(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while self.status is None and time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
            else:
                time.sleep(0.2)
        return self.status

    def close(self) -> None:
        if self.status is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except OSError:
                pass
            self.wait(10)
        self._reader.join(timeout=5)
        os.close(self.fd)


def marked_env(tmp_path: Path) -> tuple[str, dict[str, str]]:
    """A ``KEY=VALUE`` marker and an environment carrying it for one ``make run``: own ports, state and dirs."""
    token = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUD_") and k != "KAFKA_BOOTSTRAP_SERVERS"}
    env.update(
        KAFKA_PORT=str(free_port_pair()), KAFKA_STATE_DIR=str(tmp_path / "kafka"),
        VENV=str(Path(sys.executable).parent.parent), DATA="synthetic", RATE="500", METRICS_PORT=str(free_port()),
        FEEDBACK_METRICS_PORT=str(free_port()), MODELS_DIR=str(tmp_path / "models"), RUN_DIR=str(tmp_path / "runs"),
        RUN_LOCAL_TEST=token, TERM="dumb",
    )  # fmt: skip
    return f"RUN_LOCAL_TEST={token}", env


# STAMP= : the tests run in an installed virtualenv; make must not reinstall it first.
MAKE_RUN = "make run STAMP="
PARTS = (
    "kafka.Kafka", "fraud-worker tail-alerts", "fraud-worker --bootstrap-servers", "fraud-feedback --bootstrap-servers",
    "fraud-replay",
)  # fmt: skip


def wait_for_alert(text, exited, marker: str) -> None:
    """Until ``text()`` shows an alert; then every part of the run must be among the marked processes."""
    seen: dict[int, str] = {}
    deadline = time.monotonic() + 180
    while not ALERT_LINE.search(text()):
        assert not exited(), f"make run exited early:\n{text()[-4000:]}"
        assert time.monotonic() < deadline, f"no alert within 180 s:\n{text()[-4000:]}"
        seen |= marked(marker)
        time.sleep(0.5)
    time.sleep(1)
    seen |= marked(marker)
    running = " ".join(seen.values())
    # The walk finds each part while it runs, so finding none afterwards means something.
    for part in PARTS:
        assert part in running, f"{part} not found among the marked processes: {sorted(seen.values())}"


def assert_nothing_left(marker: str) -> None:
    left = marked(marker)
    deadline = time.monotonic() + 10
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = marked(marker)
    assert not left, f"processes left behind: {sorted(left.values())}"


def kill_marked(marker: str) -> None:
    """Whatever a failed run left behind must not outlive the test."""
    for pid in marked(marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


@pytest.mark.timeout(300)
def test_make_run_into_tee_in_a_terminal_ends_on_ctrl_c_with_status_0_and_nothing_left(tmp_path: Path) -> None:
    marker, env = marked_env(tmp_path)
    log = tmp_path / "run.log"
    term = Terminal(f"{MAKE_RUN} | tee {shlex.quote(str(log))}", env)
    try:
        wait_for_alert(lambda: term.output, lambda: term.wait(0) is not None, marker)
        wait_for_labelled(lambda: term.output, lambda: term.wait(0) is not None)
        term.ctrl_c()
        status = term.wait(timeout=120)
        out = term.output
        assert status == 0, f"make run | tee ended with {status} after Ctrl-C:\n{out[-3000:]}"
        assert "Error 130" not in out and "make: ***" not in out, out[-3000:]
        assert "run-local: stopped" in out, out[-3000:]
        assert_nothing_left(marker)
        assert ALERT_LINE.search(log.read_text())  # tee wrote the alerts to its file
        assert LABELLED.search(log.read_text())  # and the summary lines with precision and recall
        assert "worker stopped" in (tmp_path / "runs" / "worker.log").read_text()  # drained, not killed
        assert_feedback_stopped_cleanly(out, tmp_path / "runs")
    finally:
        term.close()
        kill_marked(marker)


@pytest.mark.timeout(300)
def test_without_a_terminal_the_clean_up_survives_a_closed_stdout_and_stderr(tmp_path: Path) -> None:
    # `make run 2>&1 | tee LOG` and SIGINT to the whole group, no terminal: tee dies at once, so every
    # later write of the script and of the alert printer meets a closed pipe.
    marker, env = marked_env(tmp_path)
    log = tmp_path / "run.log"
    proc = subprocess.Popen(
        ["bash", "-c", f"{MAKE_RUN} 2>&1 | tee {shlex.quote(str(log))} >/dev/null"], cwd=REPO, env=env,
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        wait_for_alert(lambda: log.read_text() if log.exists() else "", lambda: proc.poll() is not None, marker)
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=120)  # bash ends as tee did, by SIGINT; what counts is what is left
        assert_nothing_left(marker)
        assert "run-local: stopped" in (tmp_path / "runs" / "run-local.log").read_text()  # where say() fell back to
        assert "worker stopped" in (tmp_path / "runs" / "worker.log").read_text()  # drained, not killed
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        kill_marked(marker)
