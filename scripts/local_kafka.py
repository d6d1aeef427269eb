"""Start and stop ``scripts/local-kafka`` brokers from Python: free ports, a state directory of their own.

The one launcher the tests (``tests/support/broker.py``) and the benchmarks (``benchmarks/``) share.
It lives here, beside the shell script it drives, because it belongs to neither: the benchmarks must
not import the test suite and the tests must not import the benchmarks, and it must not go into
``worker/`` or ``training/``, which are the shipped packages (a broker launcher is a development
tool). Standard library only, like ``kafka_probe.py``, so it works before any extra is installed.
Import it as ``scripts.local_kafka`` with the repository root on ``sys.path`` (pytest puts it there
for the tests; the benchmarks insert it).

    broker = LocalKafka()          # a fresh state directory and a free pair of ports
    bootstrap = broker.start()     # "127.0.0.1:PORT"
    broker.stop()                  # data kept: broker.start(keep_data=True) restarts it
    broker.close()                 # stopped, and the state directory removed if it made it

    secured = LocalKafka(secure=True)  # SASL_SSL with ACLs (local-kafka start --secure)
    secured.start()
    read_env(secured.client_env)   # {"FRAUD_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", ...}: the worker's user
    read_env(secured.admin_env)    # the same for the admin (a super user)
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
LOCAL_KAFKA = HERE / "local-kafka"
POM = HERE / "kafka" / "pom.xml"


def kafka_version() -> str:
    """The Apache Kafka version local-kafka runs (the ``kafka.version`` property of its pom)."""
    return POM.read_text().split("<kafka.version>")[1].split("<")[0]


def free_port_pair() -> int:
    """A port p such that p and p + 1 are both free on 127.0.0.1 (client and controller)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port >= 65000:  # local-kafka takes ports up to 65534 and needs the next one too
            continue
        try:
            with socket.socket() as s2:
                s2.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port
    raise RuntimeError("no free pair of ports on 127.0.0.1")


def read_env(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``KEY=VALUE`` lines of an env file that ``local-kafka start --secure`` writes."""
    out = {}
    for line in Path(path).read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and not key.startswith("#"):
            out[key.strip()] = value
    return out


def run_launcher(args: Sequence[str], env: Mapping[str, str], timeout: float = 600) -> str:
    """Run ``scripts/local-kafka ARGS``; return the value of its last stdout line (``KEY=VALUE``), if any.

    Raises RuntimeError with the end of its stderr when it fails: the script says what went wrong in
    one line (port in use, no Java, download failed).
    """
    proc = subprocess.run(
        [str(LOCAL_KAFKA), *args], env=dict(env), capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        raise RuntimeError(f"scripts/local-kafka {' '.join(args)} failed: {proc.stderr.strip()[-500:]}")
    lines = proc.stdout.strip().splitlines()
    return lines[-1].split("=", 1)[-1] if lines else ""


class LocalKafka:
    """One ``scripts/local-kafka`` broker with its own state directory and port.

    ``state_dir`` None: a new temporary directory, removed by ``close`` (unless ``keep_state``).
    ``port`` None: a free pair of ports, chosen now. ``env`` is the base environment (default: this
    process's); ``KAFKA_STATE_DIR`` is set on it. ``secure``: a SASL_SSL listener with ACLs, whose
    users' settings are in the files ``client_env`` (the fraud-worker user) and ``admin_env``.
    """

    def __init__(
        self,
        state_dir: str | os.PathLike[str] | None = None,
        port: int | None = None,
        *,
        prefix: str = "fraud-kafka-",
        env: Mapping[str, str] | None = None,
        secure: bool = False,
    ) -> None:
        self.secure = secure
        self._own_state = state_dir is None
        self.state_dir = str(state_dir) if state_dir is not None else tempfile.mkdtemp(prefix=prefix)
        self.port = port if port is not None else free_port_pair()
        self.env = dict(os.environ if env is None else env, KAFKA_STATE_DIR=self.state_dir)
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.description = (
            f"Apache Kafka {kafka_version()} (kafka_2.13-{kafka_version()}.jar, KRaft) via scripts/local-kafka"
        )

    def start(self, keep_data: bool = False, timeout: float = 600) -> str:
        """Start it (fresh data, or the data of an earlier start with ``keep_data``); the bootstrap address."""
        args = ["start", "--port", str(self.port), *(["--keep-data"] if keep_data else [])]
        args += ["--secure"] if self.secure else []
        self.bootstrap = run_launcher(args, self.env, timeout=timeout)
        return self.bootstrap

    @property
    def client_env(self) -> Path:
        """The fraud-worker user's FRAUD_KAFKA_* settings (a secure broker, once started)."""
        return Path(self.state_dir) / "client.env"

    @property
    def admin_env(self) -> Path:
        """The admin user's FRAUD_KAFKA_* settings (a secure broker, once started)."""
        return Path(self.state_dir) / "admin.env"

    def stop(self, check: bool = True) -> None:
        """Stop it and wait until its process is gone; the data stays for ``start(keep_data=True)``."""
        try:
            run_launcher(["stop"], self.env, timeout=60)
        except (RuntimeError, subprocess.TimeoutExpired):
            if check:
                raise

    def close(self, keep_state: bool = False) -> None:
        """Stop it (errors ignored) and remove the state directory if this object created it."""
        self.stop(check=False)
        if self._own_state and not keep_state:
            shutil.rmtree(self.state_dir, ignore_errors=True)
