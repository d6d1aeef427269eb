"""``fraud-worker create-topics``: create the worker's topics, idempotently.

The topics are the ones the worker itself would use (its flags, ``FRAUD_*`` variables and
defaults: input, alert, dead-letter and, when set, scores), so a deployment creates exactly what
the worker reads and writes; the admin client gets the same passed-through Kafka settings
(``--kafka-option`` / ``FRAUD_KAFKA_*``: security, timeouts) as the worker's clients, so a
SASL/SSL cluster is set up the same way it is consumed. A topic that already exists is left as it
is (its partition count is reported, not changed). The input topic's partition count bounds how
many workers of one group do work: replicas beyond it sit idle.

Exit codes: 0 every topic exists, 1 the broker refused or did not answer, 2 bad settings.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from worker.core.errors import AccessError
from worker.edges import access
from worker.edges.config import SETTINGS_EPILOG, SettingsParser, WorkerConfig, add_settings, client_options
from worker.programs.settings import TOOL_BOOTSTRAP_TIMEOUT_MS, failure, parse_settings

DEFAULT_PARTITIONS = 6
PROG = "fraud-worker create-topics"
# The worker settings this tool reads: where the broker is, and the topics to create.
USES = ("bootstrap_servers", "input_topic", "alert_topic", "dlq_topic", "scores_topic", "shadow_topic")


def build_parser() -> argparse.ArgumentParser:
    p = SettingsParser(
        prog=PROG,
        description="Create the worker's input, alert, dead-letter (and scores, if set) topics unless they exist. "
        "Topic names, bootstrap servers and Kafka client settings are the worker's own (same flags, FRAUD_* "
        "variables and defaults), so it creates exactly what the worker reads and writes.",
        epilog=SETTINGS_EPILOG + " Exit codes: 0 every topic exists, 1 the broker refused or did not answer, "
        "2 bad settings.",
    )
    add_settings(p, USES)
    p.add_argument(
        "--partitions", type=int, default=DEFAULT_PARTITIONS,
        help="partitions of the input topic: the most workers of one group that can share the load "
        "(default: %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--output-partitions", type=int, default=None,
        help="partitions of the alert, dead-letter and scores topics (default: same as --partitions)",
    )  # fmt: skip
    p.add_argument(
        "--replication-factor", type=int, default=1, help="replicas of each partition (default: %(default)s)"
    )
    p.add_argument(
        "--labels-topic", default="",
        help="also create this labels topic (fraud-feedback's, e.g. fraud-labels) with as many partitions as the "
        "scores topic, which it must match: both are keyed by transaction_id and joined partition by partition",
    )  # fmt: skip
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the broker (default: %(default)s)")
    return p


def planned_topics(
    config: WorkerConfig, partitions: int, output_partitions: int | None, labels_topic: str = ""
) -> dict[str, int]:
    """Topic name -> partition count, from the worker's own settings (so names always agree).

    A labels topic gets the scores topic's count: fraud-feedback joins the two partition by partition.
    """
    outputs = output_partitions or partitions
    topics = {config.input_topic: partitions, config.alert_topic: outputs, config.dlq_topic: outputs}
    if config.scores_topic:
        topics[config.scores_topic] = outputs
    if config.shadow_topic:  # keyed by transaction_id like the scores topic, and joined with it by fraud-feedback
        topics[config.shadow_topic] = outputs
    if labels_topic:
        topics[labels_topic] = outputs
    return topics


def admin_options(config: WorkerConfig) -> dict[str, Any]:
    """The admin client's settings: bootstrap servers and passed-through Kafka settings from the config."""
    return client_options(
        config, "admin", client_id="fraud-create-topics", bootstrap_timeout_ms=TOOL_BOOTSTRAP_TIMEOUT_MS
    )


def ensure_topics(
    admin_config: Mapping[str, Any], topics: dict[str, int], replication_factor: int, timeout: float
) -> dict[str, str]:
    """Create the missing topics; return name -> "created" or "exists (N partitions)"."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    deadline = time.monotonic() + timeout
    while True:
        try:
            admin = KafkaAdminClient(**admin_config)
            break
        except KafkaError as exc:
            # A refusal (a wrong password, an untrusted certificate) is reported now, not retried.
            problem = access.refusal(exc) or access.diagnose(admin_config["bootstrap_servers"], admin_config)
            if problem is not None:
                raise AccessError(problem) from None
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)
    result: dict[str, str] = {}
    try:
        existing = set(admin.list_topics())
        for name, n in topics.items():
            if name in existing:
                continue
            try:
                admin.create_topics([NewTopic(name, num_partitions=n, replication_factor=replication_factor)])
                result[name] = "created"
            except TopicAlreadyExistsError:  # another creator won the race: same outcome
                pass
        # Wait until every partition has a leader, so producers and consumers can start at once. A topic
        # just created may be described with no partitions yet: that is not "every partition led".
        while True:
            metas = admin.describe_topics(sorted(topics))
            led = all(m.get("partitions") and all(p.get("leader_id", -1) >= 0 for p in m["partitions"]) for m in metas)
            if (led and len(metas) == len(topics)) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        for meta in metas:
            name = meta.get("name") or meta.get("topic")
            result.setdefault(name, f"exists ({len(meta.get('partitions') or [])} partitions)")
    finally:
        admin.close()
    return result


def main(argv: Sequence[str] | None = None) -> int:
    def problem(args: argparse.Namespace) -> str | None:
        flags = (("--partitions", args.partitions), ("--output-partitions", args.output_partitions),
                 ("--replication-factor", args.replication_factor), ("--timeout", args.timeout))  # fmt: skip
        for flag, value in flags:
            if value is not None and not value > 0:
                return f"{flag} must be > 0 (got {value})"
        return None

    parsed = parse_settings(PROG, build_parser(), argv, problem)
    if isinstance(parsed, int):
        return parsed
    args, config = parsed
    if args.labels_topic and not config.scores_topic:
        print(f"{PROG}: bad setting: --labels-topic needs the scores topic it is joined with (--scores-topic)",
              file=sys.stderr)  # fmt: skip
        return 2
    topics = planned_topics(config, args.partitions, args.output_partitions, args.labels_topic)
    try:
        result = ensure_topics(admin_options(config), topics, args.replication_factor, args.timeout)
    except Exception as exc:  # noqa: BLE001 - one line for the operator, not a traceback
        line, code = failure(exc, config)
        print(f"{PROG}: {line}", file=sys.stderr)
        return code
    for name in topics:
        print(f"{name}: {result.get(name, 'unknown')}")
    if args.labels_topic:
        counts = {t: result.get(t, "") for t in (config.scores_topic, args.labels_topic)}
        found = {
            t: (str(topics[t]) if r == "created" else r.partition("(")[2].split(" ")[0]) for t, r in counts.items()
        }
        if len(set(found.values())) > 1:
            print(f"{PROG}: {config.scores_topic} and {args.labels_topic} have different partition counts "
                  f"({found[config.scores_topic]} and {found[args.labels_topic]}): fraud-feedback cannot join them",
                  file=sys.stderr)  # fmt: skip
            return 1
    return 0
