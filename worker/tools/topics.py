"""``fraud-worker create-topics``: create the worker's topics, idempotently.

The topics are the ones the worker itself would use (its ``FRAUD_*`` variables and defaults:
input, alert, dead-letter and, when set, scores), so a deployment creates exactly what the worker
reads and writes. A topic that already exists is left as it is (its partition count is reported,
not changed). The input topic's partition count bounds how many workers of one group do work:
replicas beyond it sit idle.

Exit codes: 0 every topic exists, 1 the broker refused or did not answer, 2 bad usage.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

from worker.config import WorkerConfig, load_config
from worker.errors import ConfigError

DEFAULT_PARTITIONS = 6


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fraud-worker create-topics",
        description="Create the worker's input, alert, dead-letter (and scores, if set) topics unless they exist. "
        "Topic names and bootstrap servers default to the worker's own settings (FRAUD_* variables).",
    )
    p.add_argument("--bootstrap-servers", default=None, help="Kafka bootstrap servers [FRAUD_BOOTSTRAP_SERVERS]")
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
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the broker (default: %(default)s)")
    return p


def planned_topics(config: WorkerConfig, partitions: int, output_partitions: int | None) -> dict[str, int]:
    """Topic name -> partition count, from the worker's own settings (so names always agree)."""
    outputs = output_partitions or partitions
    topics = {config.input_topic: partitions, config.alert_topic: outputs, config.dlq_topic: outputs}
    if config.scores_topic:
        topics[config.scores_topic] = outputs
    return topics


def ensure_topics(bootstrap: str, topics: dict[str, int], replication_factor: int, timeout: float) -> dict[str, str]:
    """Create the missing topics; return name -> "created" or "exists (N partitions)"."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    deadline = time.monotonic() + timeout
    while True:
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="fraud-create-topics")
            break
        except KafkaError:
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
        # Wait until every partition has a leader, so producers and consumers can start at once.
        while True:
            metas = admin.describe_topics(sorted(topics))
            led = all(p.get("leader_id", -1) >= 0 for m in metas for p in m.get("partitions") or [])
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
    args = build_parser().parse_args(argv)
    if args.partitions <= 0 or (args.output_partitions is not None and args.output_partitions <= 0):
        print("fraud-worker create-topics: --partitions must be > 0", file=sys.stderr)
        return 2
    env = dict(os.environ)
    if args.bootstrap_servers:
        env["FRAUD_BOOTSTRAP_SERVERS"] = args.bootstrap_servers
    try:
        config = load_config([], env)
    except ConfigError as exc:
        print(f"fraud-worker create-topics: bad setting: {exc}", file=sys.stderr)
        return 2
    topics = planned_topics(config, args.partitions, args.output_partitions)
    try:
        result = ensure_topics(config.bootstrap_servers, topics, args.replication_factor, args.timeout)
    except Exception as exc:  # noqa: BLE001 - one line for the operator, not a traceback
        print(f"fraud-worker create-topics: {config.bootstrap_servers}: {exc}", file=sys.stderr)
        return 1
    for name in topics:
        print(f"{name}: {result.get(name, 'unknown')}")
    return 0
