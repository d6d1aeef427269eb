"""The secured deployment files agree with the code and with each other: docker-compose.secure.yml
merged over docker-compose.yml (resolved by ``docker-compose config``, installed as in
test_deploy.py), the files scripts/compose-secrets makes for it, and the secured Kubernetes
manifests (the worker Deployment, KEDA's TriggerAuthentication, the examples of what they read).

Each mounted file is checked through the path a client is given: a compose secret's /run/secrets
path leads to the file compose-secrets made, and a pod's path to the Secret or ConfigMap key.
"""

from __future__ import annotations

import functools
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.unit.test_deploy import COMPOSE, K8S, REPO, commands_in, docker_compose, image_env, k8s, k8s_env, published
from tests.unit.test_deploy import compose as base_compose
from training.fraud_train import build_parser as train_parser
from worker.core.signing import load_signing_key, load_trusted_keys
from worker.edges.config import ConfigError, load_config
from worker.programs.fraud_replay import build_parser as replay_parser
from worker.programs.subcommands.create_topics import DEFAULT_PARTITIONS, planned_topics

SECURE = REPO / "docker-compose.secure.yml"
SECRETS = REPO / "secrets"
EXAMPLES = K8S / "examples"


@functools.cache
def merged() -> dict:
    """Both compose files as docker-compose resolves them together."""
    done = subprocess.run(
        [docker_compose(), "-f", str(COMPOSE), "-f", str(SECURE), "config"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"docker-compose config failed:\n{done.stderr}"
    return yaml.safe_load(done.stdout)


def service(name: str) -> dict:
    return merged()["services"][name]


@pytest.fixture(scope="module")
def secrets_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What scripts/compose-secrets makes, in a directory of its own instead of ./secrets/."""
    d = tmp_path_factory.mktemp("compose") / "secrets"
    done = subprocess.run(["bash", str(REPO / "scripts" / "compose-secrets"), "--dir", str(d)], capture_output=True)
    assert done.returncode == 0, done.stderr
    return d


def mounted(name: str, secrets_dir: Path) -> dict[str, Path]:
    """Path in the container -> the file compose-secrets made for it (./secrets/X read as secrets_dir/X)."""
    out = {}
    for s in service(name).get("secrets", []):
        source = s["source"] if isinstance(s, dict) else s
        target = (s.get("target") if isinstance(s, dict) else None) or source
        file = Path(merged()["secrets"][source]["file"])
        assert file.parent == SECRETS, f"secret {source} is not under ./secrets/"
        out[f"/run/secrets/{target}"] = secrets_dir / file.name
    return out


def client_env(name: str, secrets_dir: Path) -> dict[str, str]:
    """A worker-image service's environment, each mounted path replaced by the local file."""
    files = mounted(name, secrets_dir)
    env = image_env("worker.Dockerfile")
    env.update({k: str(v) for k, v in service(name).get("environment", {}).items()})
    return {k: str(files.get(v, v)) for k, v in env.items()}


def volume(name: str, target: str) -> tuple[str, bool]:
    for v in service(name).get("volumes", []):
        source, path, *mode = v.split(":") if isinstance(v, str) else (v["source"], v["target"])
        if path == target:
            return source, mode == ["ro"] or (isinstance(v, dict) and bool(v.get("read_only")))
    raise AssertionError(f"{name} mounts nothing at {target}")


def jaas_users(secrets_dir: Path) -> dict[str, str]:
    (path,) = [p for p in mounted("kafka", secrets_dir).values() if p.name == "kafka_server_jaas.conf"]
    return dict(re.findall(r'user_([\w-]+)="([^"]*)"', path.read_text()))


# Compose ------------------------------------------------------------------------------------------


def test_secure_override_validates_over_the_base_file() -> None:
    done = subprocess.run(
        [docker_compose(), "-f", str(COMPOSE), "-f", str(SECURE), "config", "--quiet"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert set(merged()["services"]) == set(base_compose()["services"])


def test_every_secret_is_a_file_compose_secrets_makes_and_git_ignores(secrets_dir: Path) -> None:
    files = {Path(s["file"]) for s in merged()["secrets"].values()}
    assert {f.parent for f in files} == {SECRETS}
    assert {f.name for f in files} <= {p.name for p in secrets_dir.iterdir()}
    assert "secrets/" in (REPO / ".gitignore").read_text().split()


def test_broker_serves_clients_over_sasl_ssl_only_with_acls_enforced(secrets_dir: Path) -> None:
    env = service("kafka")["environment"]
    protocols = dict(item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    listeners = dict(item.split("://") for item in env["KAFKA_LISTENERS"].split(","))
    advertised = dict(item.split("://") for item in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    assert {protocols[name] for name in advertised} == {"SASL_SSL"}
    assert protocols[env["KAFKA_INTER_BROKER_LISTENER_NAME"]] == "SASL_SSL"
    # The one PLAINTEXT listener, the controller's, listens on the container's loopback alone.
    (controller,) = set(listeners) - set(advertised)
    assert controller == env["KAFKA_CONTROLLER_LISTENER_NAMES"] and protocols[controller] == "PLAINTEXT"
    assert listeners[controller].startswith("127.0.0.1:")
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@{listeners[controller]}"
    # The image's start script wants JKS password files for an advertised SSL:// or SASL_SSL:// listener.
    assert "SSL://" not in env["KAFKA_ADVERTISED_LISTENERS"]
    config = load_config([], client_env("worker", secrets_dir))
    assert advertised["CLIENT"] == config.bootstrap_servers
    host_port = int(advertised["HOST"].split(":")[1])
    assert published(service("kafka")) == {("127.0.0.1", host_port, host_port)}  # this machine only
    assert env["KAFKA_AUTHORIZER_CLASS_NAME"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert env["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
    assert "User:admin" in env["KAFKA_SUPER_USERS"].split(";")
    assert env["KAFKA_SASL_ENABLED_MECHANISMS"] == dict(config.kafka_options)["sasl_mechanism"] == "PLAIN"


def test_broker_files_are_mounted_secrets(secrets_dir: Path) -> None:
    env = service("kafka")["environment"]
    files = {path: file.name for path, file in mounted("kafka", secrets_dir).items()}
    assert env["KAFKA_SSL_KEYSTORE_TYPE"] == env["KAFKA_SSL_TRUSTSTORE_TYPE"] == "PEM"
    assert files[env["KAFKA_SSL_KEYSTORE_LOCATION"]] == "kafka-keystore.pem"
    assert files[env["KAFKA_SSL_TRUSTSTORE_LOCATION"]] == "ca.pem"
    (jaas,) = re.findall(r"-Djava\.security\.auth\.login\.config=(\S+)", env["KAFKA_OPTS"])
    assert files[jaas] == "kafka_server_jaas.conf"
    (check,) = service("kafka")["healthcheck"]["test"][1:]
    (admin_properties,) = re.findall(r"--command-config (\S+)", check)
    assert files[admin_properties] == "admin.properties"


def test_clients_log_in_as_the_users_in_the_broker_jaas_file(secrets_dir: Path) -> None:
    users = jaas_users(secrets_dir)
    assert set(users) == {"admin", "fraud-worker"}
    for name, user in (("worker", "fraud-worker"), ("replay", "admin")):
        options = dict(load_config([], client_env(name, secrets_dir)).kafka_options)
        assert options["sasl_plain_username"] == user
        assert str.__str__(options["sasl_plain_password"]) == users[user]
        assert options["security_protocol"] == "SASL_SSL"
        assert Path(options["ssl_cafile"]).name == "ca.pem"
    (properties,) = [p for p in mounted("topics", secrets_dir).values() if p.name == "admin.properties"]
    text = properties.read_text()
    assert f'username="admin" password="{users["admin"]}";' in text
    (truststore,) = re.findall(r"^ssl\.truststore\.location=(\S+)$", text, re.M)
    for name in ("kafka", "topics"):
        assert mounted(name, secrets_dir)[truststore].name == "ca.pem"


def test_worker_serves_only_bundles_signed_with_the_trainers_key(secrets_dir: Path) -> None:
    config = load_config([], client_env("worker", secrets_dir))
    trusted = load_trusted_keys(config.trusted_keys)
    (shell,) = service("trainer")["command"]
    runs = commands_in(shell, "fraud-train")
    assert len(runs) == 2  # on the mounted ULB file, else synthetic
    for argv in runs:
        args = train_parser().parse_args(argv)
        assert args.models_dir == "/models"
        key = load_signing_key(str(mounted("trainer", secrets_dir)[args.signing_key]))
        assert trusted.ids == (key.key_id,)
    # Its own volume: a bundle the plain stack left unsigned in `models` is never served here.
    assert volume("trainer", "/models") == ("models-signed", False)
    assert volume("worker", "/models") == ("models-signed", True)
    assert "models-signed" in merged()["volumes"]


def test_replay_writes_the_input_topic_as_the_admin(secrets_dir: Path) -> None:
    replay = service("replay")
    args = replay_parser().parse_args(replay["command"])
    config = load_config([], client_env("replay", secrets_dir))
    worker = load_config([], client_env("worker", secrets_dir))
    assert args.input_topic == worker.input_topic and args.bootstrap_servers == worker.bootstrap_servers
    user = dict(config.kafka_options)["sasl_plain_username"]
    assert f"User:{user}" in service("kafka")["environment"]["KAFKA_SUPER_USERS"].split(";")


def acl_grants(argv: list[str]) -> set[tuple[str, str, str, str, str]]:
    """(principal, resource kind, name, pattern type, operation) for one ``kafka-acls.sh --add``."""
    assert "--add" in argv
    principals, operations, resources, pattern = [], [], [], "literal"
    for option, value in zip(argv, argv[1:], strict=False):
        if option == "--allow-principal":
            principals.append(value)
        elif option == "--operation":
            operations.append(value)
        elif option in ("--topic", "--group", "--transactional-id"):
            resources.append((option[2:], value))
        elif option == "--resource-pattern-type":
            pattern = value
    return {(p, kind, name, pattern, op) for p in principals for kind, name in resources for op in operations}


def test_topics_service_creates_the_topics_and_exactly_the_worker_acls(secrets_dir: Path) -> None:
    (shell,) = service("topics")["command"]
    config = load_config([], client_env("worker", secrets_dir))
    admin_properties = {p for p, f in mounted("topics", secrets_dir).items() if f.name == "admin.properties"}
    created, grants = {}, set()
    for program in ("/opt/kafka/bin/kafka-topics.sh", "/opt/kafka/bin/kafka-acls.sh"):
        for argv in commands_in(shell, program):
            assert argv[argv.index("--bootstrap-server") + 1] == config.bootstrap_servers
            assert {argv[argv.index("--command-config") + 1]} == admin_properties
            if program.endswith("kafka-topics.sh"):
                assert "--if-not-exists" in argv and "--create" in argv
                created[argv[argv.index("--topic") + 1]] = int(argv[argv.index("--partitions") + 1])
            else:
                grants |= acl_grants(argv)
    assert created == planned_topics(config, DEFAULT_PARTITIONS, None)
    user = f"User:{dict(config.kafka_options)['sasl_plain_username']}"
    group, prefix = config.group_id, f"{config.group_id}-"
    read, write, outputs = ("Read", "Describe"), ("Write", "Describe"), (config.alert_topic, config.dlq_topic)
    expected = (
        {(user, "topic", config.input_topic, "literal", op) for op in read}
        | {(user, "group", group, "literal", op) for op in read}  # DESCRIBE on a group comes with READ anyway
        | {(user, "topic", topic, "literal", op) for topic in outputs for op in write}
        | {(user, "transactional-id", prefix, "prefixed", op) for op in write}
        # its own topics, a feature spec's changelog and repartition topics: created, read and written
        | {(user, "topic", prefix, "prefixed", op) for op in ("Read", "Write", "Describe", "Create")}
        # the entity-risk table fraud-feedback publishes, for a spec reading labels: read only
        | {(user, "topic", config.entity_risk_topic, "literal", op) for op in read}
    )
    assert grants == expected
    # An exactly-once worker's transactional id falls under the granted prefix.
    eos = load_config([], {**client_env("worker", secrets_dir), "FRAUD_PROCESSING_GUARANTEE": "exactly-once"})
    assert eos.effective_transactional_id().startswith(prefix)
    assert config.changelog_topic().startswith(prefix)


# Kubernetes ---------------------------------------------------------------------------------------


def example(kind: str, name: str) -> dict[str, str]:
    """The keys and values of the example Secret or ConfigMap of that kind and name."""
    for path in sorted(EXAMPLES.glob("*.yaml")):
        (doc,) = list(yaml.safe_load_all(path.read_text()))
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc.get("stringData") or doc.get("data") or {}
    raise AssertionError(f"no example {kind} {name} in {EXAMPLES}")


def mounted_source(pod: dict, container: dict, path: str) -> tuple[str, str, str]:
    """(Secret or ConfigMap, its name, its key) a file path in the container is projected from."""
    (mount,) = [m for m in container["volumeMounts"] if path.startswith(m["mountPath"].rstrip("/") + "/")]
    assert mount["readOnly"] is True
    (vol,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    relative = path[len(mount["mountPath"].rstrip("/")) + 1 :]
    if "secret" in vol:
        kind, source, name = "Secret", vol["secret"], vol["secret"]["secretName"]
    else:
        kind, source, name = "ConfigMap", vol["configMap"], vol["configMap"]["name"]
    (key,) = [i["key"] for i in source["items"] if i["path"] == relative]
    return kind, name, key


def worker_pod() -> tuple[dict, dict]:
    pod = k8s("worker-deployment.yaml")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return pod, container


def test_k8s_worker_logs_in_over_tls_with_credentials_from_mounted_objects() -> None:
    pod, container = worker_pod()
    env = {e["name"]: e.get("value") for e in container["env"]}
    sources = {
        name: mounted_source(pod, container, env[name])
        for name in ("FRAUD_KAFKA_SASL_PLAIN_PASSWORD_FILE", "FRAUD_KAFKA_SSL_CAFILE", "FRAUD_TRUSTED_KEYS")
    }
    assert sources == {
        "FRAUD_KAFKA_SASL_PLAIN_PASSWORD_FILE": ("Secret", "kafka-credentials", "password"),
        "FRAUD_KAFKA_SSL_CAFILE": ("Secret", "kafka-ca", "ca.pem"),
        "FRAUD_TRUSTED_KEYS": ("ConfigMap", "model-signing", "model-signing.pub"),
    }
    for kind, name, key in sources.values():
        assert key in example(kind, name)
    assert not any("PASSWORD" in name and not name.endswith("_FILE") for name in env)  # never a plain variable
    options = dict(load_config([], k8s_env(container)).kafka_options)
    assert options["security_protocol"] == "SASL_SSL" and options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "fraud-worker"
    # The password file: readable by the worker's group (the pod's fsGroup), by no one else.
    (vol,) = [v for v in pod["volumes"] if v["name"] == "kafka-credentials"]
    assert vol["secret"]["defaultMode"] == 0o440
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"]


def test_k8s_example_placeholders_are_refused_rather_than_trusted(tmp_path: Path) -> None:
    pub = tmp_path / "model-signing.pub"
    pub.write_text(example("ConfigMap", "model-signing")["model-signing.pub"])
    with pytest.raises(ConfigError):
        load_trusted_keys(str(pub))
    assert "REPLACE" in example("Secret", "kafka-credentials")["password"]
    assert "REPLACE" in example("Secret", "kafka-ca")["ca.pem"]


def test_keda_logs_in_as_the_worker_with_the_same_secrets() -> None:
    pod, container = worker_pod()
    env = {e["name"]: e.get("value") for e in container["env"]}
    (trigger,) = k8s("keda-scaledobject.yaml")["spec"]["triggers"]
    auth = k8s("keda-triggerauthentication.yaml")
    assert auth["kind"] == "TriggerAuthentication"
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    keda_sasl = {"PLAIN": "plaintext", "SCRAM-SHA-256": "scram_sha256", "SCRAM-SHA-512": "scram_sha512"}
    assert trigger["metadata"]["sasl"] == keda_sasl[env["FRAUD_KAFKA_SASL_MECHANISM"]]
    assert trigger["metadata"]["tls"] == "enable" and env["FRAUD_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    (username,) = auth["spec"]["env"]
    assert username == {"parameter": "username", "name": "FRAUD_KAFKA_SASL_PLAIN_USERNAME", "containerName": "worker"}
    assert container["name"] == "worker"
    refs = {r["parameter"]: ("Secret", r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]}
    assert refs == {
        "password": mounted_source(pod, container, env["FRAUD_KAFKA_SASL_PLAIN_PASSWORD_FILE"]),
        "ca": mounted_source(pod, container, env["FRAUD_KAFKA_SSL_CAFILE"]),
    }


def test_every_k8s_manifest_is_valid_yaml_with_a_kind_and_a_name() -> None:
    paths = sorted(K8S.rglob("*.yaml"))
    assert {"keda-triggerauthentication.yaml", "kafka-ca.yaml", "model-signing.yaml"} <= {p.name for p in paths}
    for path in paths:
        docs = list(yaml.safe_load_all(path.read_text()))
        assert docs, path
        for doc in docs:
            assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"], path
