"""``scripts/run-local`` (``make run``) as a person uses it: start, wait for alerts, Ctrl-C, nothing left.

It starts its own broker (``scripts/local-kafka`` on free ports, its own state directory), trains a
model on synthetic data into a temporary models directory, and runs the worker, the replay and the
alert printer. Ctrl-C is emulated as a terminal sends it: SIGINT to the script's whole process
group. Afterwards no process it started may remain, the broker included.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.support.broker import free_port_pair
from tests.support.workers import free_port

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


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


@pytest.mark.timeout(240)
def test_run_local_shows_alerts_and_ctrl_c_leaves_nothing_behind(tmp_path: Path) -> None:
    kafka_port, metrics_port = free_port_pair(), free_port()
    state = tmp_path / "kafka"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUD_") and k != "KAFKA_BOOTSTRAP_SERVERS"}
    env.update(
        KAFKA_PORT=str(kafka_port), KAFKA_STATE_DIR=str(state), VENV=str(Path(sys.executable).parent.parent),
        DATA="synthetic", RATE="500",
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
        _run_and_check(proc, lines, reader, state, tmp_path, metrics_port, started)
    finally:
        # Whatever a failed run left behind (run-local killed before its own cleanup ran: the worker
        # and the broker run in sessions of their own) must not outlive the test.
        if (state / "broker.pid").exists():
            started.add(int((state / "broker.pid").read_text()))
        for pid in started:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def _run_and_check(proc, lines, reader, state, tmp_path, metrics_port, started) -> None:
    broker_pid = None
    try:
        deadline = time.monotonic() + 180
        while not any(" ALERT " in line for line in lines):
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
        assert "dead-lettered" in out  # the running summary from the worker's /metrics

        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        assert proc.wait(timeout=60) == 130
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
