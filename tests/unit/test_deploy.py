"""The deployment files agree with the code: docker-compose.yml, the Dockerfiles, the compose
Prometheus config and the Kubernetes manifests.

No Docker engine is needed: ``docker-compose config`` (the Debian package, installed here with
apt-get when missing) validates the compose file, and every command, flag, port and ``FRAUD_*``
variable in it is checked against the real argument parsers and ``worker.config.load_config``.
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
from training.cli import build_parser as train_parser
from worker.config import load_config
from worker.tools.replay import build_parser as replay_parser
from worker.tools.topics import DEFAULT_PARTITIONS, planned_topics

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
    assert scripts["fraud-worker"] == "worker.cli:main"
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
