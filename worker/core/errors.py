"""Errors raised by fraud-scoring.

One root, so callers can catch everything the project raises::

    FraudScoringError
     ├── ConfigError          a setting is unknown, malformed or contradicts another (names it)
     ├── BundleError          a model bundle is missing, unreadable or fails its checks
     │    └── SignatureError  its signature is missing, malformed, by an untrusted key or does not match
     ├── DecodeError          one input record cannot be scored (carries a stable ``reason`` code)
     ├── BrokerError          the Kafka cluster cannot be reached or refused a request (retriable)
     └── AccessError          the Kafka cluster refused this client's credentials or permissions

``retriable`` tells the loop whether trying again can help (a broker hiccup) or whether the
input must be dead-lettered (a malformed record) or the setting fixed (bad config).
"""

from __future__ import annotations


class FraudScoringError(Exception):
    """Root of every error this project raises on purpose."""

    retriable = False


class ConfigError(FraudScoringError):
    """A setting is unknown, malformed or contradicts another one."""


class BundleError(FraudScoringError):
    """A model bundle cannot be served: missing, unreadable, or failing a check."""


class SignatureError(BundleError):
    """A bundle fails the signature check (``worker.core.signing``); ``reason`` is a stable code for the metric."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class DecodeError(FraudScoringError):
    """One record cannot be turned into a transaction.

    ``reason`` is a stable, low-cardinality code (it becomes the DLQ ``error`` header and the
    ``reason`` label of ``fraud_events_invalid_total``); ``detail`` is human text.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class BrokerError(FraudScoringError):
    """The broker is unreachable or did not acknowledge a request; the loop backs off and retries."""

    retriable = True


class AccessError(FraudScoringError):
    """The cluster refused this client: authentication failed, its certificate is not trusted, the
    client's security protocol is not the listener's, or an ACL is missing (``worker.edges.access``).

    Not retriable: the same settings meet the same refusal, so the program stops with one line
    naming the problem (the worker with exit status 4) instead of retrying for ever.
    """
