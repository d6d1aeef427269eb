"""The worker and every tool on a secured broker: SASL_SSL (SCRAM-SHA-512) with ACLs enforced.

The broker is ``scripts/local-kafka start --secure`` (tests/support/secured.py): the worker runs
as the ``fraud-worker`` user, its password read from a file, with the ACLs of its own topics and
group only (granted per test with kafka-python's admin API); the tools and the test's own clients
run as the admin. Each way of getting the settings wrong ends the program within 30 s, with one
line that names the problem and exit status 4; a missing write ACL on the alert topic holds the
input uncommitted until it is granted; the password shows in no log line and no metric.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import numpy as np
import pytest

from tests.conftest import KafkaClients
from tests.integration.conftest import ULB
from tests.support.broker import REPO
from tests.support.secured import SecuredKafka, grant
from tests.support.workers import WorkerProcess, committed, read_topic, wait_committed
from worker.core.scoring import load_scorer
from worker.edges.access import diagnose

REFUSED = 4
BOUND = 30.0  # seconds a refused program may take to say so
N_EVENTS = 3_000


@pytest.fixture(scope="module")
def secured() -> Iterator[SecuredKafka]:
    broker = SecuredKafka.start()
    try:
        yield broker
    finally:
        broker.close()


@pytest.fixture
def skafka(secured) -> Iterator[KafkaClients]:
    """The test's own clients and topics on the secured broker, as the admin."""
    clients = KafkaClients(secured.bootstrap, settings=secured.admin_settings)
    try:
        yield clients
    finally:
        clients.close()


@pytest.fixture
def names() -> dict[str, str]:
    tag = uuid.uuid4().hex[:10]
    return {
        "input_topic": f"transactions-{tag}",
        "alert_topic": f"alerts-{tag}",
        "dlq_topic": f"dlq-{tag}",
        "scores_topic": f"scores-{tag}",
        "group": f"group-{tag}",  # not under local-kafka's own grant, transactional ids fraud-worker-*
    }


def topic_flags(names: dict[str, str]) -> list[str]:
    return [x for key in ("input_topic", "alert_topic", "dlq_topic", "scores_topic")
            for x in ("--" + key.replace("_", "-"), names[key])]  # fmt: skip


def run_tool(argv: list[str], env: dict[str, str], timeout: float = 120) -> tuple[subprocess.CompletedProcess, float]:
    """``python -m worker <tool> ...`` or ``python -m worker.programs.fraud_replay ...`` with only ``env``'s FRAUD_*."""
    import os

    base = {k: v for k, v in os.environ.items() if not k.startswith("FRAUD_")}
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", *argv], cwd=REPO, env={**base, **env}, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip
    return proc, time.monotonic() - start


def create_topics(secured: SecuredKafka, names: dict[str, str], partitions: int = 3) -> None:
    proc, _ = run_tool(
        ["worker", "create-topics", "--bootstrap-servers", secured.bootstrap, *topic_flags(names),
         "--partitions", str(partitions), "--output-partitions", "1"],
        secured.admin_env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count(": created") == 4, proc.stdout


def grant_worker(skafka: KafkaClients, names: dict[str, str], *, alerts: bool = True, group: bool = True,
                 read: bool = True, transactional: bool = False) -> None:  # fmt: skip
    writes = [names["dlq_topic"], names["scores_topic"], *([names["alert_topic"]] if alerts else [])]
    grant(skafka.admin(), topics_read=[names["input_topic"]] if read else [], topics_write=writes,
          group=names["group"] if group else None,
          transactional_prefix=names["group"] + "-" if transactional else None)  # fmt: skip


def worker(secured: SecuredKafka, models_dir, names: dict[str, str], env: dict[str, str] | None = None,
           extra: tuple[str, ...] = ()) -> WorkerProcess:  # fmt: skip
    topics = {k: v for k, v in names.items() if k != "group"}
    env = secured.worker_env() if env is None else env
    return WorkerProcess(secured.bootstrap, models_dir, group=names["group"], env=env, extra=extra, **topics)


def replay(secured: SecuredKafka, names: dict[str, str], count: int, env: dict[str, str] | None = None):
    return run_tool(
        ["worker.programs.fraud_replay", "--bootstrap-servers", secured.bootstrap,
         "--input-topic", names["input_topic"],
         "--data", str(ULB), "--count", str(count), "--id-prefix", "s", "--quiet"],
        env if env is not None else secured.admin_env,
    )  # fmt: skip


def refused_in_time(w: WorkerProcess, case: str, phrase: str) -> None:
    """Start ``w``: it must exit with status 4 within ``BOUND`` seconds, one line naming the problem."""
    start = time.monotonic()
    w.start()
    try:
        code = w.proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{case}: still running after 60 s:\n{w.output()[-3000:]}") from None
    took = time.monotonic() - start
    assert code == REFUSED, w.output()[-3000:]
    assert took < BOUND, f"{case}: {took:.1f} s"
    one_refusal(w.output(), phrase)


def one_refusal(output: str, phrase: str) -> None:
    """Exactly one line says the program was refused, and it names the problem; no traceback."""
    lines = [line for line in output.splitlines() if "refused by the Kafka cluster" in line]
    assert len(lines) == 1, output[-3000:]
    assert phrase in lines[0], lines[0]
    assert "Traceback" not in output, output[-3000:]


def test_end_to_end_as_the_worker_user_with_every_tool(secured, skafka, names, ulb, models_dir, workers):
    """Acceptance 1 and 5: alerts equal the offline scorer's; the password is in no log line or metric."""
    create_topics(secured, names)
    grant_worker(skafka, names)
    proc, _ = replay(secured, names, N_EVENTS)
    assert proc.returncode == 0, proc.stderr

    # DEBUG: kafka-python's own lines too (its admin client logs its whole configuration at DEBUG).
    w = worker(secured, models_dir, names, extra=("--log-level", "DEBUG"))
    workers.append(w.start())
    w.wait_ready()
    wait_committed(skafka, names["group"], names["input_topic"], workers=[w])
    metrics = w.get("/metrics")[1]
    assert w.metric("fraud_events_scored_total") == N_EVENTS
    assert w.stop() == 0
    log = w.output()
    assert "model bundles are not signature-checked" in log or "signed by" in log
    assert secured.password not in log, "the password is in the worker's log"
    assert secured.password not in metrics, "the password is in /metrics"
    assert "sasl_plain_password" in log and "'***'" in log, "kafka-python's logged configuration shows it masked"

    offline = load_scorer(str(models_dir)).score(ulb.features[:N_EVENTS].astype(np.float32))
    threshold = ulb.model["threshold"]
    alerts = {json.loads(r.value)["transaction_id"] for r in read_topic(skafka, names["alert_topic"])}
    expected = {f"s-{i:09d}" for i in np.flatnonzero(offline >= threshold)}
    borderline = {f"s-{i:09d}" for i in np.flatnonzero(np.abs(offline - threshold) <= 1e-5)}
    assert expected and alerts - borderline == expected - borderline

    tail, _ = run_tool(["worker", "tail-alerts", "--bootstrap-servers", secured.bootstrap, "--alert-topic",
                        names["alert_topic"], "--from-beginning", "--max-alerts", str(len(alerts))],
                       secured.admin_env)  # fmt: skip
    assert tail.returncode == 0, tail.stderr
    assert len(tail.stdout.splitlines()) == len(alerts)
    recon, _ = run_tool(["worker", "reconcile", "--bootstrap-servers", secured.bootstrap, "--group-id",
                         names["group"], *topic_flags(names), "--json"], secured.admin_env)  # fmt: skip
    assert recon.returncode == 0, recon.stderr + recon.stdout
    report = json.loads(recon.stdout)
    assert report["ok"] and report["lost"] == 0 and report["duplicates"] == 0, report
    assert report["scored"] == N_EVENTS
    for out in (proc.stdout + proc.stderr, tail.stdout + tail.stderr, recon.stdout + recon.stderr):
        assert secured.password not in out

    # A plaintext client at the secured port gets nowhere; the probe says why.
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    with pytest.raises(KafkaError):
        KafkaProducer(bootstrap_servers=secured.bootstrap, bootstrap_timeout_ms=2_000)
    assert "speaks TLS but security_protocol is PLAINTEXT" in (diagnose(secured.bootstrap, {}) or "")


def test_exactly_once_as_the_worker_user(secured, skafka, names, models_dir, workers):
    """Its transactional id's ACL (WRITE on the prefix <group>-) is all exactly-once needs besides."""
    create_topics(secured, names)
    grant_worker(skafka, names, transactional=True)
    proc, _ = replay(secured, names, 1_000)
    assert proc.returncode == 0, proc.stderr
    w = worker(secured, models_dir, names, extra=("--processing-guarantee", "exactly-once"))
    workers.append(w.start())
    w.wait_ready()
    wait_committed(skafka, names["group"], names["input_topic"], workers=[w])
    assert w.metric("fraud_transactions_total", {"outcome": "committed"}) >= 1
    assert w.stop() == 0


def test_behavioural_features_as_the_worker_user(secured, skafka, names, tmp_path, workers):
    """A bundle with a feature spec, events keyed by customer: the worker creates, writes and reads its changelog
    and repartition topics with the ACLs docs/security.md lists for them (the topic prefix <group>-) and no more."""
    from tests.support.bundles import make_bundle
    from worker.core.features import fit_categoricals, load_spec
    from worker.offline import synthetic

    create_topics(secured, names)
    grant_worker(skafka, names)
    grant(skafka.admin(), topic_prefix=names["group"] + "-")
    columns = synthetic.generate_behavioural(1_000, 3)
    spec = fit_categoricals(load_spec(str(REPO / "examples" / "behavioural.toml")), columns)
    feature_names = ["amount", *spec.names]
    models = tmp_path / "models"
    make_bundle(models, "f1", feature_names=feature_names, mean=[0.0] * len(feature_names),
                scale=[1.0] * len(feature_names), weights=[0.001] * len(feature_names), bias=-3.0, threshold=0.5,
                feature_spec=spec.to_manifest())  # fmt: skip
    fields = ("transaction_id", "event_time", "customer_id", "terminal_id", "amount", "channel", "merchant_category")
    producer = skafka.producer()
    for row in zip(*(columns[f].tolist() for f in fields), strict=True):
        value = json.dumps(dict(zip(fields, row, strict=True))).encode()
        producer.send(names["input_topic"], key=row[2].encode(), value=value)
    producer.flush()
    w = worker(secured, models, names, extra=("--input-key-field", "customer_id", "--scores-include-features",
                                              "--feature-state-dir", str(tmp_path / "state")))  # fmt: skip
    workers.append(w.start())
    w.wait_ready()
    wait_committed(skafka, names["group"], names["input_topic"], workers=[w])
    deadline = time.monotonic() + 60
    while w.metric("fraud_events_scored_total") < 1_000 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert w.metric("fraud_events_scored_total") == 1_000
    assert w.metric("fraud_feature_forwarded_events_total") == 1_000
    assert w.metric("fraud_feature_changelog_records_total") > 0
    assert w.stop() == 0
    scored = [json.loads(r.value) for r in read_topic(skafka, names["scores_topic"])]
    assert len(scored) == 1_000 and all("terminal_id.count.1d" in d["features"] for d in scored)


def _wrong_password(s: SecuredKafka) -> dict[str, str]:
    return {**s.client_env, "FRAUD_KAFKA_SASL_PLAIN_PASSWORD": "not-the-password-x9"}


MISCONFIGURED = {
    # case: (the worker's FRAUD_KAFKA_* settings, what its one line must say)
    "wrong password": (_wrong_password, "authentication failed"),
    "untrusted CA": (lambda s: s.worker_env(FRAUD_KAFKA_SSL_CAFILE="/etc/ssl/certs/ca-certificates.crt"),
                     "certificate not trusted"),
    "plaintext client": (lambda s: {}, "speaks TLS but security_protocol is PLAINTEXT"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(MISCONFIGURED))
def test_a_misconfigured_worker_ends_within_30s_with_one_line(case, secured, skafka, names, models_dir, workers):
    """Acceptance 2, the worker: wrong password, untrusted CA, plaintext client."""
    create_topics(secured, names)
    grant_worker(skafka, names)
    settings, phrase = MISCONFIGURED[case]
    w = worker(secured, models_dir, names, env=settings(secured))
    workers.append(w)
    refused_in_time(w, case, phrase)
    assert "not-the-password-x9" not in w.output() and secured.password not in w.output()


ACL_MISSING = {
    "no read ACL on the input topic": (dict(read=False), "not authorised for topic transactions-"),
    "no ACL on the group": (dict(group=False), "not authorised for consumer group group-"),
    "no ACL on the transactional id": (dict(transactional=False), "not authorised for transactional id"),
}


@pytest.mark.parametrize("case", sorted(ACL_MISSING))
def test_a_worker_missing_an_acl_it_reads_with_ends_within_30s(case, secured, skafka, names, models_dir, workers):
    """Acceptance 2, the ACLs: reading the input, joining the group, using the transactional id."""
    create_topics(secured, names)
    missing, phrase = ACL_MISSING[case]
    grant_worker(skafka, names, **{"transactional": True, **missing})
    extra = ("--processing-guarantee", "exactly-once") if "transactional" in case else ()
    w = worker(secured, models_dir, names, extra=extra)
    workers.append(w)
    refused_in_time(w, case, phrase)


def _tool_argv(tool: str, secured: SecuredKafka, names: dict[str, str]) -> list[str]:
    b = ["--bootstrap-servers", secured.bootstrap]
    return {
        "create-topics": ["worker", "create-topics", *b, *topic_flags(names)],
        "fraud-replay": ["worker.programs.fraud_replay", *b, "--input-topic", names["input_topic"],
                         "--synthetic", "10"],
        "tail-alerts": ["worker", "tail-alerts", *b, "--alert-topic", names["alert_topic"], "--max-alerts", "1"],
        "reconcile": ["worker", "reconcile", *b, "--group-id", names["group"], *topic_flags(names)],
    }[tool]


TOOLS = ("create-topics", "fraud-replay", "reconcile", "tail-alerts")


def test_each_tool_refused_says_so_within_30s(secured, skafka, names):
    """Acceptance 2, the tools: a wrong password, then the worker user's settings (no ACL for the tool's
    work). The eight runs go at once (each waits out its bootstrap timeout or the broker's refusal);
    create-topics gets topics of its own that do not exist yet."""
    from concurrent.futures import ThreadPoolExecutor

    create_topics(secured, names)
    fresh = {**names, **{k: f"{v}-new" for k, v in names.items() if k.endswith("_topic")}}
    wrong = {**secured.admin_env, "FRAUD_KAFKA_SASL_PLAIN_PASSWORD": "not-the-password-y7"}
    refusals = ((wrong, "authentication failed"), (secured.worker_env(), "not authorised"))
    cases = [(tool, env, phrase) for env, phrase in refusals for tool in TOOLS]

    def run(case: tuple) -> tuple[subprocess.CompletedProcess, float]:
        tool, env, _ = case
        return run_tool(_tool_argv(tool, secured, fresh if tool == "create-topics" else names), env)

    with ThreadPoolExecutor(len(cases)) as pool:
        runs = list(pool.map(run, cases))
    for (tool, _, phrase), (proc, took) in zip(cases, runs, strict=True):
        assert proc.returncode == REFUSED and took < BOUND, (tool, phrase, took, proc.stderr)
        one_refusal(proc.stderr, phrase)
        assert "not-the-password-y7" not in proc.stdout + proc.stderr, tool


def test_without_write_access_to_the_alert_topic_nothing_is_committed_until_granted(
    secured, skafka, names, ulb, models_dir, workers
):
    """Acceptance 3: errors counted and logged once per 30 s, nothing committed; granted: all delivered."""
    create_topics(secured, names, partitions=1)
    grant_worker(skafka, names, alerts=False)
    # A fraud the model alerts on first, so the very first batch has an alert to write.
    offline = load_scorer(str(models_dir)).score(ulb.features.astype(np.float32))
    first_alert = int(np.flatnonzero(offline >= ulb.model["threshold"] + 1e-3)[0])
    rows = [first_alert, *range(300)]
    producer = skafka.producer(linger_ms=20)
    for i in rows:
        producer.send(names["input_topic"], key=f"acct-{i % 97}".encode(), value=ulb.event(i))
    producer.flush(timeout=60)
    produce_errors = {"stage": "produce"}

    w = worker(secured, models_dir, names)
    workers.append(w.start())
    w.wait_ready()
    w.wait_metric("fraud_broker_errors_total", 3, timeout=60, labels=produce_errors)
    refused = "not authorised for topic " + names["alert_topic"]
    assert refused in w.output(), w.output()[-3000:]  # said once at start, before the first send
    errors_before, watched = w.metric("fraud_broker_errors_total", produce_errors), time.monotonic()
    time.sleep(32)  # longer than one interval of the trouble log
    assert committed(skafka, names["group"], names["input_topic"]) == {}, "committed past a refused alert"
    errors = w.metric("fraud_broker_errors_total", produce_errors)
    assert errors >= errors_before + 3, "the retries are counted"
    retried = [line for line in w.output().splitlines() if "batch not acknowledged" in line]
    assert all("TopicAuthorizationFailedError" in line for line in retried), retried
    took = time.monotonic() - watched
    assert 1 <= len(retried) <= 1 + took // 30 + 1, retried  # once per 30 s, not once per retry
    print(f"\n{errors:.0f} refused sends counted, {len(retried)} log lines in {took + 5:.0f} s")

    grant(skafka.admin(), topics_write=[names["alert_topic"]])
    wait_committed(skafka, names["group"], names["input_topic"], timeout=90, workers=[w])
    assert w.stop() == 0
    recon, _ = run_tool(["worker", "reconcile", "--bootstrap-servers", secured.bootstrap, "--group-id",
                         names["group"], *topic_flags(names), "--json"], secured.admin_env)  # fmt: skip
    report = json.loads(recon.stdout)
    assert recon.returncode == 0 and report["ok"] and report["lost"] == 0, report
    assert report["scored"] == len(rows)
    alerts = {json.loads(r.value)["transaction_id"] for r in read_topic(skafka, names["alert_topic"])}
    expected = {f"tx-{i}" for i in set(rows) if offline[i] >= ulb.model["threshold"]}
    assert f"tx-{first_alert}" in expected and alerts == expected, "every alert delivered once the ACL is granted"


def test_status_of_the_secured_broker_names_its_settings_files(secured):
    """``status`` (and ``start`` of the running one) work for it as for the plain broker."""
    env = {**secured.broker.env}
    status = subprocess.run([str(REPO / "scripts" / "local-kafka"), "status"], env=env, capture_output=True, text=True)
    assert status.returncode == 0, status.stderr
    assert "SASL_SSL" in status.stdout and f"KAFKA_CLIENT_ENV={secured.broker.client_env}" in status.stdout
    again = subprocess.run([str(REPO / "scripts" / "local-kafka"), "start", "--secure"], env=env, capture_output=True,
                           text=True)  # fmt: skip
    assert again.returncode == 0 and "already running" in again.stderr, again.stderr
    lines = again.stdout.strip().splitlines()
    assert lines == [f"KAFKA_CLIENT_ENV={secured.broker.client_env}", f"KAFKA_ADMIN_ENV={secured.broker.admin_env}",
                     f"KAFKA_BOOTSTRAP_SERVERS={secured.bootstrap}"]  # fmt: skip
    assert (secured.broker.client_env.stat().st_mode & 0o077) == 0, "the settings files are private"
