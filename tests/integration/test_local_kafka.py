"""scripts/local-kafka: starts a real broker, stops exactly it, reuses its jar cache, and fails in one line."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from scripts.local_kafka import LOCAL_KAFKA, LocalKafka, free_port_pair


def _run(args, env, timeout=180):
    return subprocess.run([str(LOCAL_KAFKA), *args], env=env, capture_output=True, text=True, timeout=timeout)


def _java_pids_for(state: Path) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "kafka.Kafka" in cmd and str(state) in cmd:
                pids.append(int(entry.name))
    return pids


def _path_without(tmp_path: Path, hidden: str, stub: str | None = None) -> str:
    """A PATH holding links to every command on the current PATH except ``hidden``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for d in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            target = bin_dir / name
            if name != hidden and not target.exists():
                target.symlink_to(os.path.join(d, name))
    if stub is not None:
        (bin_dir / hidden).write_text(stub)
        (bin_dir / hidden).chmod(0o755)
    return str(bin_dir)


def test_start_then_stop_leaves_no_broker_and_second_start_reuses_jars(tmp_path, kafka_broker):
    # kafka_broker has resolved the jars once for this session (or they were cached already).
    state = tmp_path / "state"
    env = dict(os.environ, KAFKA_STATE_DIR=str(state))
    port = free_port_pair()
    for _ in range(2):
        started = _run(["start", "--port", str(port)], env)
        assert started.returncode == 0, started.stderr
        assert started.stdout.strip().splitlines()[-1] == f"KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:{port}"
        assert "resolving" not in started.stderr, "a second start must reuse the cached jars"
        assert _run(["status"], env).returncode == 0
        assert len(_java_pids_for(state)) == 1
        stopped = _run(["stop"], env)
        assert stopped.returncode == 0, stopped.stderr
        assert _java_pids_for(state) == []
        assert _run(["status"], env).returncode == 1


def test_port_in_use_fails_in_one_line(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = _run(["start", "--port", str(port)], dict(os.environ, KAFKA_STATE_DIR=str(tmp_path)))
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"port {port}" in lines[0] and "in use" in lines[0]


def test_missing_java_is_named_in_one_line(tmp_path):
    env = dict(os.environ, KAFKA_STATE_DIR=str(tmp_path / "s"), PATH=_path_without(tmp_path, "java"))
    proc = _run(["start", "--port", str(free_port_pair())], env)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "java" in lines[0], proc.stderr


@pytest.mark.parametrize("hidden", ["mvn"])
def test_failed_download_fails_in_one_line(tmp_path, hidden):
    # An empty jar cache and a Maven that cannot reach its repository.
    env = dict(
        os.environ,
        KAFKA_STATE_DIR=str(tmp_path / "s"),
        KAFKA_CACHE_DIR=str(tmp_path / "cache"),
        PATH=_path_without(tmp_path, hidden, stub="#!/bin/sh\necho 'Could not transfer artifact' >&2\nexit 1\n"),
    )
    proc = _run(["start", "--port", str(free_port_pair())], env)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.strip().splitlines() if "resolving" not in line]
    assert len(errors) == 1 and "download" in errors[0] and "failed" in errors[0], proc.stderr
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob(".complete"))


def test_launcher_restarts_with_the_data_kept_and_close_removes_its_state(kafka_broker):
    # scripts/local_kafka.py, the launcher the test fixtures and the benchmarks share.
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    broker = LocalKafka(prefix="fraud-test-launcher-")
    state = Path(broker.state_dir)
    try:
        bootstrap = broker.start()
        assert bootstrap == f"127.0.0.1:{broker.port}" and len(_java_pids_for(state)) == 1
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="launcher-test")
        try:
            admin.create_topics([NewTopic("kept", num_partitions=1, replication_factor=1)])
        finally:
            admin.close()
        broker.stop()
        assert _java_pids_for(state) == []
        assert broker.start(keep_data=True) == bootstrap
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="launcher-test")
        try:
            assert "kept" in admin.list_topics()
        finally:
            admin.close()
    finally:
        broker.close()
    assert _java_pids_for(state) == [] and not state.exists()


SPY = """#!/bin/sh
# Records this call's arguments and the mode of every file under the state directory, then runs the
# real one; the broker itself (kafka.Kafka) is not started: it exits 1 at once.
{{ printf '%s\\037' "$0" "$@"; printf '\\n'; }} >>"{log}/argv"
find "$KAFKA_STATE_DIR" -printf '%m %p\\n' >>"{log}/modes" 2>/dev/null
for arg in "$@"; do [ "$arg" = kafka.Kafka ] && exit 1; done
exec "{real}" "$@"
"""


def test_secure_start_puts_no_password_on_a_command_line_and_no_secret_in_a_readable_file(tmp_path, kafka_broker):
    """Every java and openssl that `start --secure` runs up to the broker itself is spied on: no
    argument holds a password (ps shows arguments to every user), and at each call every file of the
    state directory (the config with the admin's password, the env files, the CA key, the formatted
    metadata log with the SCRAM credentials) is already private, not tightened afterwards."""
    import shutil

    spies, log = tmp_path / "bin", tmp_path / "log"
    spies.mkdir()
    log.mkdir()
    for name in ("java", "openssl"):
        real = shutil.which(name)
        assert real, f"{name} is not on PATH"
        (spies / name).write_text(SPY.format(log=log, real=real))
        (spies / name).chmod(0o755)
    env = dict(os.environ, PATH=f"{spies}{os.pathsep}{os.environ['PATH']}")
    broker = LocalKafka(prefix="fraud-test-secure-spy-", env=env, secure=True)
    state = Path(broker.state_dir)
    try:
        with pytest.raises(RuntimeError, match="broker exited during start-up"):
            broker.start()
        passwords = {
            (state / f"{user}.env").read_text().split("FRAUD_KAFKA_SASL_PLAIN_PASSWORD=")[1].split()[0]
            for user in ("client", "admin")
        }
        assert len(passwords) == 2 and all(len(p) >= 32 for p in passwords)
        calls = [call.split("\x1f") for call in (log / "argv").read_text().splitlines()]
        programs = {Path(argv[0]).name for argv in calls}
        assert programs == {"java", "openssl"} and any("StorageTool" in " ".join(argv) for argv in calls)
        assert any("kafka.Kafka" in argv for argv in calls)  # got as far as starting the broker
        for argv in calls:
            assert not any(p in arg for p in passwords for arg in argv), f"a password on a command line: {argv[:4]}"
        assert (state / "data" / "meta.properties").exists()  # formatted, with the SCRAM users
        readable = {line for line in (log / "modes").read_text().splitlines() if int(line.split()[0], 8) & 0o077}
        assert not readable, f"readable by others while the broker was set up: {sorted(readable)[:5]}"
        secret = [s.encode() for s in passwords]
        holders = {p.name for p in state.rglob("*") if p.is_file() and any(s in p.read_bytes() for s in secret)}
        assert holders >= {"server.properties", "client.env", "admin.env", "admin.properties"}, holders
        assert not (state / "format.args").exists()  # the argument file with the passwords is gone
    finally:
        broker.close()


def test_brokers_starting_at_once_on_an_empty_cache_resolve_it_once(tmp_path):
    # Test workers start their brokers at once; each used to clear and fill the same cache directory.
    stub = (
        "#!/bin/sh\n"
        'for a in "$@"; do case "$a" in -DoutputDirectory=*) out="${a#-DoutputDirectory=}";; esac; done\n'
        f'echo x >> "{tmp_path}/mvn-calls"\n'
        'mkdir -p "$out" && sleep 1 && echo jar > "$out/kafka.jar"\n'
    )
    path = _path_without(tmp_path, "mvn", stub=stub)
    procs = [
        subprocess.Popen(
            [str(LOCAL_KAFKA), "fetch"],
            env=dict(
                os.environ, KAFKA_STATE_DIR=str(tmp_path / f"s{i}"), KAFKA_CACHE_DIR=str(tmp_path / "cache"), PATH=path
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    results = [(p.wait(timeout=60), p.stderr.read()) for p in procs]
    assert [rc for rc, _ in results] == [0, 0, 0], results
    assert (tmp_path / "mvn-calls").read_text().count("x") == 1
    jars = list((tmp_path / "cache").rglob("kafka.jar"))
    assert len(jars) == 1 and jars[0].read_text() == "jar\n"
