"""A secured local broker for the tests: SASL_SSL (SCRAM-SHA-512) with ACLs, and its two users' settings.

``scripts/local-kafka start --secure`` makes the CA, the users and the listener; this module reads
its env files (``FRAUD_KAFKA_*`` lines) into what a worker process takes (``worker_env``: the
fraud-worker user, with the password in a file, as a Kubernetes Secret would mount it) and what a
kafka-python client takes (``admin_settings``: the admin, a super user, for the test's own
clients). ``grant`` adds the fraud-worker user's ACLs for a test's own topics and group with
kafka-python's admin API, a path independent of the AclCommand that local-kafka uses.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from scripts.local_kafka import LocalKafka, read_env

WORKER_PRINCIPAL = "User:fraud-worker"
PREFIX = "FRAUD_KAFKA_"


def kafka_settings(env: dict[str, str]) -> dict[str, str]:
    """``FRAUD_KAFKA_SASL_MECHANISM=...`` lines as kafka-python keyword arguments."""
    return {k[len(PREFIX) :].lower(): v for k, v in env.items() if k.startswith(PREFIX)}


@dataclass
class SecuredKafka:
    broker: LocalKafka
    bootstrap: str
    client_env: dict[str, str]  # the fraud-worker user's FRAUD_KAFKA_* lines, the password among them
    admin_env: dict[str, str]
    password_file: Path  # the fraud-worker user's password, alone in a file

    @classmethod
    def start(cls) -> SecuredKafka:
        broker = LocalKafka(secure=True, prefix="fraud-kafka-secure-")
        bootstrap = broker.start()
        client_env, admin_env = read_env(broker.client_env), read_env(broker.admin_env)
        password_file = Path(broker.state_dir) / "fraud-worker.password"
        password_file.write_text(client_env[PREFIX + "SASL_PLAIN_PASSWORD"] + "\n")
        os.chmod(password_file, 0o600)
        return cls(broker, bootstrap, client_env, admin_env, password_file)

    @property
    def password(self) -> str:
        return self.client_env[PREFIX + "SASL_PLAIN_PASSWORD"]

    @property
    def admin_settings(self) -> dict[str, str]:
        return kafka_settings(self.admin_env)

    def worker_env(self, **overrides: str) -> dict[str, str]:
        """The fraud-worker user's FRAUD_KAFKA_* variables, the password read from its file."""
        env = {k: v for k, v in self.client_env.items() if k != PREFIX + "SASL_PLAIN_PASSWORD"}
        env[PREFIX + "SASL_PLAIN_PASSWORD_FILE"] = str(self.password_file)
        env.update(overrides)
        return env

    def close(self) -> None:
        self.broker.close()


def grant(admin, topics_read=(), topics_write=(), group: str | None = None, transactional_prefix: str | None = None,
          topic_prefix: str | None = None):  # fmt: skip
    """Allow the fraud-worker user to read ``topics_read`` (and ``group``), write ``topics_write``; and to create,
    read and write the topics named ``topic_prefix``... (its feature changelog and repartition topics)."""
    from kafka.admin import ACL, ACLOperation, ACLPermissionType, ACLResourcePatternType, ResourcePattern, ResourceType

    def acl(kind, name, op, pattern=ACLResourcePatternType.LITERAL):
        return ACL(WORKER_PRINCIPAL, "*", op, ACLPermissionType.ALLOW, ResourcePattern(kind, name, pattern))

    acls = []
    for topic in topics_read:
        acls += [
            acl(ResourceType.TOPIC, topic, ACLOperation.READ),
            acl(ResourceType.TOPIC, topic, ACLOperation.DESCRIBE),
        ]
    for topic in topics_write:
        acls += [
            acl(ResourceType.TOPIC, topic, ACLOperation.WRITE),
            acl(ResourceType.TOPIC, topic, ACLOperation.DESCRIBE),
        ]
    if group:
        acls.append(acl(ResourceType.GROUP, group, ACLOperation.READ))
    if transactional_prefix:
        for op in (ACLOperation.WRITE, ACLOperation.DESCRIBE):
            acls.append(acl(ResourceType.TRANSACTIONAL_ID, transactional_prefix, op, ACLResourcePatternType.PREFIXED))
    if topic_prefix:
        for op in (ACLOperation.READ, ACLOperation.WRITE, ACLOperation.DESCRIBE, ACLOperation.CREATE):
            acls.append(acl(ResourceType.TOPIC, topic_prefix, op, ACLResourcePatternType.PREFIXED))
    result = admin.create_acls(acls)
    failed = result.get("failed") if isinstance(result, dict) else None
    assert not failed, f"ACLs not created: {failed}"
