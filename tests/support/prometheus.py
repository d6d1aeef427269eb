"""A real Prometheus server for the tests, and ``promtool``; installed from the Debian package if missing.

``ensure_prometheus()`` finds ``prometheus`` and ``promtool`` on PATH, or runs
``apt-get update && apt-get install -y prometheus`` (as root, else through sudo) and looks again;
if they are still missing it raises, so a machine without them fails the tests instead of skipping.
``PrometheusServer`` runs one server with its own config and storage directory on a free port.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tests.support.workers import free_port

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy" / "prometheus"


@functools.cache
def ensure_prometheus() -> tuple[str, str]:
    """Paths of ``prometheus`` and ``promtool``, installing the Debian package ``prometheus`` if needed."""
    found = shutil.which("prometheus"), shutil.which("promtool")
    if all(found):
        return found  # type: ignore[return-value]
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "prometheus"]):
        done = subprocess.run(sudo + cmd, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    found = shutil.which("prometheus"), shutil.which("promtool")
    if not all(found):
        raise RuntimeError("the Debian package prometheus is installed but prometheus/promtool are not on PATH")
    return found  # type: ignore[return-value]


def promtool(*args: str, cwd: Path = DEPLOY) -> subprocess.CompletedProcess:
    return subprocess.run([ensure_prometheus()[1], *args], cwd=cwd, capture_output=True, text=True, timeout=120)


class PrometheusServer:
    """``prometheus`` scraping ``targets`` every second, with copies of ``rule_files`` loaded."""

    def __init__(self, workdir: Path, targets: list[str], rule_files: tuple[Path, ...] = ()) -> None:
        self.workdir = workdir
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        rules = []
        for path in rule_files:
            shutil.copy(path, workdir / path.name)
            rules.append(path.name)
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": rules,
            "scrape_configs": [{"job_name": "fraud-worker", "static_configs": [{"targets": targets}]}],
        }
        # JSON is YAML: no YAML library needed to write the config.
        (workdir / "prometheus.yml").write_text(json.dumps(config, indent=2))
        self.log = open(workdir / "prometheus.log", "wb")  # noqa: SIM115 - closed in close()
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> PrometheusServer:
        binary = ensure_prometheus()[0]
        self.proc = subprocess.Popen(
            [binary, f"--config.file={self.workdir / 'prometheus.yml'}", f"--storage.tsdb.path={self.workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            cwd=self.workdir, stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited with {self.proc.returncode}:\n{self.output()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"prometheus not ready after {timeout}s:\n{self.output()}")

    def output(self) -> str:
        self.log.flush()
        return (self.workdir / "prometheus.log").read_text(errors="replace")[-3000:]

    def api(self, path: str, **params: str) -> dict:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        """The instant vector of ``expr``: a list of {"metric": labels, "value": [time, "text"]}."""
        return self.api("query", query=expr)["result"]

    def wait_for(self, expr: str, check, timeout: float = 60.0) -> list[dict]:
        """Query ``expr`` until ``check(result)`` holds; the last result is in the error otherwise."""
        deadline = time.monotonic() + timeout
        result: list[dict] = []
        while time.monotonic() < deadline:
            result = self.query(expr)
            if result and check(result):
                return result
            time.sleep(0.5)
        raise AssertionError(f"{expr} = {result} after {timeout}s\n{self.output()}")

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()
