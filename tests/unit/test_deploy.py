"""The deployment files agree with the code: docker-compose.yml, the Dockerfiles, the compose
Prometheus config and the Kubernetes manifests.

No Docker engine is needed: ``docker-compose config`` (the Debian package, installed here with
apt-get when missing) validates the compose file, and every command, flag, port and ``FRAUD_*``
variable in it is checked against the real argument parsers and ``worker.edges.config.load_config``.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import tomllib
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tests.support.prometheus import promtool
from training.fraud_train import build_parser as train_parser
from worker.edges.config import load_config
from worker.programs.fraud_replay import build_parser as replay_parser
from worker.programs.subcommands.create_topics import DEFAULT_PARTITIONS, planned_topics

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
K8S = REPO / "deploy" / "k8s"


@functools.cache
def docker_compose() -> str:
    """Path of ``docker-compose``, installing the Debian package if it is missing (never a skip)."""
    found = shutil.which("docker-compose")
    if found:
        return found
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "docker-compose"]):
        done = subprocess.run(sudo + cmd, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}"
    found = shutil.which("docker-compose")
    assert found, "the Debian package docker-compose is installed but docker-compose is not on PATH"
    return found


@functools.cache
def compose() -> dict:
    """The compose file as docker-compose itself resolves it (anchors merged, defaults filled)."""
    done = subprocess.run(
        [docker_compose(), "-f", str(COMPOSE), "config"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"docker-compose config failed:\n{done.stderr}"
    return yaml.safe_load(done.stdout)


def dockerfile(name: str) -> dict[str, list[str]]:
    """Instruction -> its argument strings, continuation lines joined."""
    text = (REPO / "docker" / name).read_text().replace("\\\n", " ")
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.setdefault(word.upper(), []).append(rest.strip())
    return out


def image_env(name: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for arg in dockerfile(name).get("ENV", []):
        env.update(item.split("=", 1) for item in shlex.split(arg))
    return env


def commands_in(shell: str, program: str) -> list[list[str]]:
    """Every ``program ...`` invocation in a shell string, as argv after the program name."""
    found = []
    for part in re.split(r"&&|\|\||;|\bthen\b|\bexec\b", shell):
        words = shlex.split(part)
        if program in words:
            found.append(words[words.index(program) + 1 :])
    return found


def service(name: str) -> dict:
    return compose()["services"][name]


def published(svc: dict) -> set[tuple[str, int, int]]:
    """(host address, host port, container port) of each published port, from the short syntax
    docker-compose prints ("127.0.0.1:3000:3000/tcp") or the long one; "" for all interfaces."""
    out = set()
    for p in svc.get("ports", []):
        if isinstance(p, dict):
            out.add((p.get("host_ip", ""), int(p["published"]), int(p["target"])))
        else:
            *host, port, target = str(p).split("/")[0].rsplit(":", 2)
            out.add((host[0] if host else "", int(port), int(target)))
    return out


def mounts(name: str) -> dict[str, tuple[str, bool]]:
    """Mount target -> (source, read-only), from either the short or the long volume syntax."""
    out = {}
    for v in service(name).get("volumes", []):
        if isinstance(v, str):
            source, target, *mode = v.split(":")
            out[target] = (source, mode == ["ro"])
        else:
            out[v["target"]] = (v["source"], bool(v.get("read_only")))
    return out


def worker_env() -> dict[str, str]:
    env = image_env("worker.Dockerfile")
    env.update({k: str(v) for k, v in service("worker")["environment"].items()})
    return env


def test_docker_compose_config_validates_the_file() -> None:
    done = subprocess.run(
        [docker_compose(), "-f", str(COMPOSE), "config", "--quiet"], cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert set(compose()["services"]) == {"kafka", "topics", "trainer", "worker", "replay", "prometheus", "grafana"}


def test_worker_environment_and_command_are_accepted_by_load_config() -> None:
    worker = service("worker")
    env = worker_env()
    assert all(k.startswith("FRAUD_") for k in worker["environment"])
    config = load_config(worker.get("command") or [], env)  # raises ConfigError on anything unknown
    assert config.metrics_host == "0.0.0.0"
    assert config.models_dir == "/models"
    assert mounts("worker")["/models"] == ("models", True) or mounts("worker")["/models"][1]


def test_worker_image_runs_fraud_worker_as_non_root_without_tensorflow() -> None:
    df = dockerfile("worker.Dockerfile")
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert shlex.split(df["ENTRYPOINT"][-1].strip("[]").replace(",", " ")) == ["fraud-worker"]
    assert scripts["fraud-worker"] == "worker.programs.fraud_worker:main"
    # The image holds worker/ only: every tool it runs must live there (no training import).
    assert scripts["fraud-replay"].startswith("worker.") and not any("training" in c for c in df["COPY"])
    assert "entrypoint" not in service("worker")
    user = df["USER"][-1].split(":")[0]
    assert user not in ("root", "0")
    installs = " ".join(df["RUN"])
    assert "pip install ." in installs and "[training]" not in installs and "tensorflow" not in installs.lower()
    assert df["FROM"][0].startswith("python:3.11-slim")


def test_one_metrics_port_everywhere() -> None:
    port = str(load_config([], worker_env()).metrics_port)
    assert dockerfile("worker.Dockerfile")["EXPOSE"] == [port]
    assert [str(p) for p in service("worker")["expose"]] == [port]
    assert f"127.0.0.1:{port}/healthz" in dockerfile("worker.Dockerfile")["HEALTHCHECK"][0]
    scrape = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.compose.yml").read_text())
    (job,) = scrape["scrape_configs"]
    assert job["job_name"] == "fraud-worker"  # the alert rules select on it
    assert job["dns_sd_configs"] == [{"names": ["worker"], "type": "A", "port": int(port), "refresh_interval": "15s"}]


def test_two_worker_replicas_in_one_group_and_no_fixed_host_port() -> None:
    worker = service("worker")
    assert worker["deploy"]["replicas"] >= 2
    assert "container_name" not in worker and "ports" not in worker  # replicas would collide
    assert "FRAUD_GROUP_ID" in worker["environment"]


def test_topics_service_creates_the_worker_topics() -> None:
    (shell,) = service("topics")["command"]
    created = {}
    for argv in commands_in(shell, "/opt/kafka/bin/kafka-topics.sh"):
        assert "--if-not-exists" in argv and "--create" in argv
        created[argv[argv.index("--topic") + 1]] = int(argv[argv.index("--partitions") + 1])
    assert created == planned_topics(load_config([], worker_env()), DEFAULT_PARTITIONS, None)
    assert service("topics")["image"] == service("kafka")["image"]


def test_kafka_listeners_serve_the_network_and_the_host() -> None:
    env = service("kafka")["environment"]
    advertised = dict(item.split("://") for item in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    assert advertised["PLAINTEXT"] == load_config([], worker_env()).bootstrap_servers == "kafka:9092"
    host_port = int(advertised["HOST"].split(":")[1])
    assert published(service("kafka")) == {("127.0.0.1", host_port, host_port)}
    assert service("kafka")["image"].startswith("apache/kafka:")
    assert "broker,controller" == env["KAFKA_PROCESS_ROLES"]  # KRaft, no ZooKeeper


def test_trainer_commands_parse_with_fraud_train() -> None:
    (shell,) = service("trainer")["command"]
    runs = commands_in(shell, "fraud-train")
    assert len(runs) == 2  # on the mounted ULB file, else synthetic
    for argv in runs:
        args = train_parser().parse_args(argv)
        assert args.models_dir == "/models"
    cmd = dockerfile("trainer.Dockerfile")["CMD"][-1]
    assert train_parser().parse_args(yaml.safe_load(cmd)).models_dir == "/models"
    assert "[training]" in " ".join(dockerfile("trainer.Dockerfile")["RUN"])
    trainer_user = dockerfile("trainer.Dockerfile")["USER"][-1].split(":")[0]
    assert trainer_user == dockerfile("worker.Dockerfile")["USER"][-1].split(":")[0]


def test_replay_command_parses_and_targets_the_input_topic() -> None:
    replay = service("replay")
    assert replay["entrypoint"] == ["fraud-replay"]
    args = replay_parser().parse_args(replay["command"])
    config = load_config([], worker_env())
    assert args.input_topic == config.input_topic and args.bootstrap_servers == config.bootstrap_servers
    assert args.rate > 0
    assert replay["image"] == service("worker")["image"]  # fraud-replay needs no training extra


def test_prometheus_and_grafana_use_the_shipped_files() -> None:
    prom = mounts("prometheus")
    assert Path(prom["/etc/prometheus/prometheus.yml"][0]) == REPO / "deploy/prometheus/prometheus.compose.yml"
    assert Path(prom["/etc/prometheus/alerts.yml"][0]) == REPO / "deploy/prometheus/alerts.yml"
    done = promtool("check", "config", "prometheus.compose.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    graf = mounts("grafana")
    assert Path(graf["/etc/grafana/provisioning"][0]) == REPO / "deploy/grafana/provisioning"
    provider = yaml.safe_load((REPO / "deploy/grafana/provisioning/dashboards/fraud.yml").read_text())
    assert Path(graf[provider["providers"][0]["options"]["path"]][0]) == REPO / "deploy/grafana/dashboards"
    datasource = yaml.safe_load((REPO / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    assert published(service("prometheus")) == {("127.0.0.1", 9090, 9090)}


def test_dockerignore_keeps_the_build_context_small() -> None:
    lines = (REPO / ".dockerignore").read_text().split()
    assert lines[lines.index("*")] == "*" and {"!worker/", "!training/", "!pyproject.toml"} <= set(lines)


# Kubernetes ---------------------------------------------------------------------------------------


def k8s(name: str) -> dict:
    (doc,) = list(yaml.safe_load_all((K8S / name).read_text()))
    return doc


# What the downward API puts in a variable set from a pod field: a Deployment pod's name.
POD_FIELDS = {"metadata.name": "fraud-worker-7c9d5b8f46-x2k8q"}
# Stand-ins for the files the pod's Secret and ConfigMap volumes hold: load_config reads the
# password file and the trusted keys at start.
MOUNTED = tempfile.TemporaryDirectory(prefix="fraud-k8s-mounts-")


def k8s_env(container: dict) -> dict[str, str]:
    """The container's environment as a pod sees it: fields of the pod filled in from POD_FIELDS,
    each path under one of its volume mounts replaced by a local stand-in for that file."""
    env = {}
    for e in container["env"]:
        if "value" in e:
            env[e["name"]] = e["value"]
        else:
            env[e["name"]] = POD_FIELDS[e["valueFrom"]["fieldRef"]["fieldPath"]]
    mounts = [m["mountPath"].rstrip("/") + "/" for m in container.get("volumeMounts", [])]
    for name, value in env.items():
        paths = value.split(",")
        if all(any(p.startswith(m) for m in mounts) for p in paths):
            env[name] = ",".join(stand_in(name, p) for p in paths)
    return env


def stand_in(variable: str, path: str) -> str:
    """A local file for ``path`` in the pod: an Ed25519 public key for FRAUD_TRUSTED_KEYS, else text."""
    local = Path(MOUNTED.name, path.lstrip("/"))
    if not local.exists():
        local.parent.mkdir(parents=True, exist_ok=True)
        if variable == "FRAUD_TRUSTED_KEYS":
            public = Ed25519PrivateKey.generate().public_key()
            local.write_bytes(public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
        else:
            local.write_text("stand-in")
    return str(local)


def test_k8s_deployment_env_is_accepted_by_load_config() -> None:
    deployment = k8s("worker-deployment.yaml")
    assert deployment["kind"] == "Deployment"
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = k8s_env(container)
    config = load_config(container.get("args") or [], env)
    assert container["ports"][0]["containerPort"] == config.metrics_port
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_k8s_worker_is_a_static_group_member_named_after_its_pod() -> None:
    """A worker container restarted in its pod takes its partitions back without a session timeout."""
    (container,) = k8s("worker-deployment.yaml")["spec"]["template"]["spec"]["containers"]
    (var,) = [e for e in container["env"] if e["name"] == "FRAUD_GROUP_INSTANCE_ID"]
    assert var == {"name": "FRAUD_GROUP_INSTANCE_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    assert load_config([], k8s_env(container)).group_instance_id == POD_FIELDS["metadata.name"]


def test_keda_scales_on_the_worker_group_and_never_past_the_partitions() -> None:
    scaled = k8s("keda-scaledobject.yaml")
    deployment = k8s("worker-deployment.yaml")
    config = load_config([], k8s_env(deployment["spec"]["template"]["spec"]["containers"][0]))
    assert scaled["kind"] == "ScaledObject"
    assert scaled["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert meta["consumerGroup"] == config.group_id and meta["topic"] == config.input_topic
    assert meta["bootstrapServers"] == config.bootstrap_servers
    # Replicas beyond the partition count sit idle: the cap is the partition count.
    assert scaled["spec"]["maxReplicaCount"] == DEFAULT_PARTITIONS
    assert meta["allowIdleConsumers"] == "false"


def test_pdb_selects_the_worker_pods() -> None:
    pdb = k8s("pdb.yaml")
    labels = k8s("worker-deployment.yaml")["spec"]["template"]["metadata"]["labels"]
    assert pdb["kind"] == "PodDisruptionBudget"
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1


@pytest.mark.parametrize("name", ["worker-deployment.yaml", "keda-scaledobject.yaml", "pdb.yaml"])
def test_k8s_manifests_are_single_yaml_documents_with_a_kind(name: str) -> None:
    doc = k8s(name)
    assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"] == "fraud-worker"


# Hardening: every property checked on every manifest and compose service ----------------------

WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}


def k8s_docs() -> list[dict]:
    """Every object the manifests create (deploy/k8s/*.yaml; examples/ is not applied)."""
    return [doc for path in sorted(K8S.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]


def pod_template(doc: dict) -> dict:
    """The pod template of a workload: its metadata and spec."""
    spec = doc["spec"]["jobTemplate"]["spec"] if doc["kind"] == "CronJob" else doc["spec"]
    return spec["template"]


def workloads() -> dict[str, dict]:
    out = {doc["metadata"]["name"]: doc for doc in k8s_docs() if doc["kind"] in WORKLOADS}
    assert {"fraud-worker", "fraud-feedback", "fraud-retrain"} <= set(out)
    return out


def all_containers(pod: dict) -> list[dict]:
    return pod.get("initContainers", []) + pod["containers"]


def test_every_claim_a_manifest_mounts_is_created_by_a_manifest() -> None:
    """A pod whose claim nobody creates never starts: a CronJob with concurrencyPolicy Forbid then never
    runs, in silence. A StatefulSet's volumeClaimTemplates are its own pods' claims, no one else's."""
    created = {doc["metadata"]["name"]: doc for doc in k8s_docs() if doc["kind"] == "PersistentVolumeClaim"}
    mounted_by: dict[str, list[tuple[str, bool]]] = {}
    for name, doc in workloads().items():
        pod = pod_template(doc)["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        templates = {t["metadata"]["name"] for t in doc["spec"].get("volumeClaimTemplates", [])}
        for container in all_containers(pod):
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes or mount["name"] in templates, (name, mount)
                claim = volumes.get(mount["name"], {}).get("persistentVolumeClaim")
                if claim:
                    assert claim["claimName"] in created, f"{name} mounts {claim['claimName']}, made by no manifest"
                    read_only = bool(mount.get("readOnly") or claim.get("readOnly"))
                    mounted_by.setdefault(claim["claimName"], []).append((name, read_only))
    assert mounted_by, "no workload mounts a claim"
    for claim, users in mounted_by.items():
        modes = created[claim]["spec"]["accessModes"]
        if len(users) > 1:  # pods of several workloads, on any node, one or more writing
            writes = not all(read_only for _, read_only in users)
            assert ("ReadWriteMany" if writes else "ReadOnlyMany") in modes or "ReadWriteMany" in modes, (claim, modes)
    # The models claim: written by the retraining job, read by the workers.
    assert sorted(mounted_by["fraud-models"]) == [("fraud-retrain", False), ("fraud-worker", True)]


def test_every_pod_has_runtime_default_seccomp_and_no_service_account_token() -> None:
    for name, doc in workloads().items():
        pod = pod_template(doc)["spec"]
        assert pod.get("automountServiceAccountToken") is False, name
        context = pod["securityContext"]
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert context["runAsNonRoot"] is True and int(context["runAsUser"]) > 0, name


def test_every_container_is_non_root_read_only_and_without_privileges() -> None:
    for name, doc in workloads().items():
        for container in all_containers(pod_template(doc)["spec"]):
            context = container.get("securityContext", {})
            where = f"{name}/{container['name']}"
            assert context.get("allowPrivilegeEscalation") is False, where
            assert context.get("readOnlyRootFilesystem") is True, where
            assert context.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not context.get("capabilities", {}).get("add"), where
            assert context.get("runAsNonRoot") is True and not context.get("privileged"), where


def metrics_port(doc: dict) -> int:
    (container,) = pod_template(doc)["spec"]["containers"]
    (port,) = [p["containerPort"] for p in container["ports"] if p["name"] == "metrics"]
    return int(port)


def test_network_policies_admit_only_the_monitoring_namespace_to_the_metrics_ports() -> None:
    policies = [doc for doc in k8s_docs() if doc["kind"] == "NetworkPolicy"]
    for name in ("fraud-worker", "fraud-feedback"):
        doc = workloads()[name]
        labels = pod_template(doc)["metadata"]["labels"]
        selecting = [
            p for p in policies if p["spec"]["podSelector"].get("matchLabels", {}).items() <= labels.items()
            and not p["spec"]["podSelector"].get("matchExpressions")
        ]  # fmt: skip
        assert selecting, f"no NetworkPolicy selects the {name} pods"
        rules = []
        for policy in selecting:
            assert "Ingress" in policy["spec"]["policyTypes"]
            assert policy["spec"]["podSelector"].get("matchLabels"), "an empty selector selects every pod"
            rules += policy["spec"].get("ingress", [])
        assert rules
        for rule in rules:
            assert rule["ports"] == [{"protocol": "TCP", "port": metrics_port(doc)}], (name, rule)
            monitoring = {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
            assert rule["from"] == [{"namespaceSelector": monitoring}], (name, rule)
        assert str(metrics_port(doc)) == pod_template(doc)["metadata"]["annotations"]["prometheus.io/port"]


def test_retraining_reads_the_topics_as_its_own_user_and_fails_visibly() -> None:
    from worker.programs.fraud_feedback import build_export_parser
    from worker.programs.fraud_feedback import build_parser as feedback_parser

    cron = workloads()["fraud-retrain"]
    assert cron["kind"] == "CronJob" and cron["spec"]["concurrencyPolicy"] == "Forbid"
    # A start missed by over an hour is skipped (not run late), a hung run is killed, failures are kept.
    assert 0 < cron["spec"]["startingDeadlineSeconds"] <= 3600
    job = cron["spec"]["jobTemplate"]["spec"]
    assert 0 < job["activeDeadlineSeconds"] <= 6 * 3600 and cron["spec"]["failedJobsHistoryLimit"] >= 1
    (container,) = pod_template(cron)["spec"]["containers"]
    (shell,) = container["args"]
    (export,) = commands_in(shell, "fraud-feedback")
    assert export[0] == "export"
    args = build_export_parser().parse_args(export[1:])
    assert args.from_topics and args.state_dir is None  # no store of another pod
    (feedback_container,) = pod_template(workloads()["fraud-feedback"])["spec"]["containers"]
    feedback = feedback_parser().parse_args(feedback_container["args"])
    assert (args.scores_topic, args.labels_topic) == (feedback.scores_topic, feedback.labels_topic)
    assert args.label_window == feedback.label_window
    (train,) = commands_in(shell, "fraud-train")
    targs = train_parser().parse_args(train)
    assert targs.data_path == args.out and targs.label_column == "is_fraud" and targs.split == "time"
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert not mounts[targs.models_dir].get("readOnly")  # it writes bundles and CURRENT
    assert Path(args.out).parent.as_posix() in mounts  # a writable emptyDir under a read-only root
    # Its own Kafka user, its password from a mounted Secret: neither the worker's nor fraud-feedback's.
    env = {e["name"]: e["value"] for e in container["env"]}
    assert not any("PASSWORD" in k and not k.endswith("_FILE") for k in env)
    options = dict(load_config([], k8s_env(container)).kafka_options)
    assert options["security_protocol"] == "SASL_SSL" and options["sasl_plain_username"] == "fraud-retrain"
    others = {
        e.get("value") for w in ("fraud-worker", "fraud-feedback")
        for e in pod_template(workloads()[w])["spec"]["containers"][0]["env"]
        if e["name"] == "FRAUD_KAFKA_SASL_PLAIN_USERNAME"
    }  # fmt: skip
    assert "fraud-retrain" not in others
    # Prometheus says when no run has succeeded for a day and more (on kube-state-metrics).
    rules = yaml.safe_load((REPO / "deploy/prometheus/alerts.yml").read_text())
    (rule,) = [r for g in rules["groups"] for r in g["rules"] if r.get("alert") == "FraudRetrainNotSucceeding"]
    assert f'cronjob="{cron["metadata"]["name"]}"' in rule["expr"]
    assert "kube_cronjob_status_last_successful_time" in rule["expr"]


def test_compose_publishes_ports_on_the_loopback_only() -> None:
    """19092 is plaintext without authentication in the base file: no other machine may reach it."""
    for name, svc in compose()["services"].items():
        for host, port, _ in published(svc):
            assert host == "127.0.0.1", f"{name} publishes {port} on every interface"
    assert {port for svc in compose()["services"].values() for _, port, _ in published(svc)} == {19092, 9090, 3000}


def test_grafana_is_read_only_for_anonymous_visitors_and_nobody_logs_in() -> None:
    env = {k: str(v) for k, v in service("grafana")["environment"].items()}
    if env.get("GF_AUTH_ANONYMOUS_ENABLED", "false").lower() == "true":
        assert env.get("GF_AUTH_ANONYMOUS_ORG_ROLE") == "Viewer"
    # No login form and no basic auth: Grafana's default admin/admin account cannot be used.
    assert env.get("GF_AUTH_DISABLE_LOGIN_FORM") == "true" and env.get("GF_AUTH_BASIC_ENABLED") == "false"
    assert env.get("GF_USERS_ALLOW_SIGN_UP", "false") == "false"
