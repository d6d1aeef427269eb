"""Ed25519 signatures over model bundles: ``fraud-train --signing-key`` signs, the worker verifies.

A signed bundle holds ``signature.json`` beside ``manifest.json`` and ``model.tflite``::

    {"algorithm": "ed25519", "key_id": "<16 hex>", "signature": "<base64 of 64 bytes>"}

The signature is over ``DOMAIN + sha256(manifest.json bytes) + sha256(model.tflite bytes)`` (raw
32-byte digests): the two files exactly as they lie on disk, so any change to either (a weight in
the manifest, a byte of the model, even with ``model_sha256`` fixed up) breaks it. The fixed prefix
keeps a bundle signature from being valid for any other message signed with the same key.
``key_id`` is the first 16 hex digits of the sha256 of the public key's 32 raw bytes; it only picks
the trusted key to try and is not trusted itself.

Keys are PEM files as openssl writes them: ``openssl genpkey -algorithm ed25519 -out key.pem``
(PKCS#8, unencrypted) signs, ``openssl pkey -in key.pem -pubout -out key.pub`` (SubjectPublicKeyInfo)
verifies. A key file that cannot be used is a ``ConfigError`` naming the file. Verifying is pure:
bytes in, the signing key's id or a ``SignatureError`` out (``worker.bundle`` does the reading).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from worker.errors import ConfigError, SignatureError

ALGORITHM = "ed25519"
DOMAIN = b"fraud-scoring bundle v1\n"
MAX_SIGNATURE_BYTES = 4096
MAX_KEY_FILE_BYTES = 64 * 1024
# SignatureError.reason values (the reason label of fraud_model_signature_failures_total).
UNSIGNED, MALFORMED, UNKNOWN_KEY, MISMATCH = "unsigned", "malformed", "unknown_key", "mismatch"
REASONS = (UNSIGNED, MALFORMED, UNKNOWN_KEY, MISMATCH)


def signed_message(manifest_bytes: bytes, model_bytes: bytes) -> bytes:
    """The bytes a bundle signature is over: the domain prefix, then each file's sha256."""
    return DOMAIN + hashlib.sha256(manifest_bytes).digest() + hashlib.sha256(model_bytes).digest()


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class SigningKey:
    """A private key that signs bundles (``fraud-train --signing-key``)."""

    private_key: Ed25519PrivateKey
    key_id: str

    def sign(self, manifest_bytes: bytes, model_bytes: bytes) -> bytes:
        """The ``signature.json`` content for a bundle of these two files."""
        signature = self.private_key.sign(signed_message(manifest_bytes, model_bytes))
        doc = {"algorithm": ALGORITHM, "key_id": self.key_id, "signature": base64.b64encode(signature).decode()}
        return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()


@dataclass(frozen=True)
class TrustedKeys:
    """The public keys a worker accepts bundle signatures from, by key id."""

    keys: Mapping[str, Ed25519PublicKey]

    @classmethod
    def of(cls, public_keys: Iterable[Ed25519PublicKey]) -> TrustedKeys:
        return cls({key_id(k): k for k in public_keys})

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(sorted(self.keys))

    def verify(self, bundle: str, manifest_bytes: bytes, model_bytes: bytes, signature_doc: bytes | None) -> str:
        """The id of the trusted key that signed these bytes; else ``SignatureError`` naming ``bundle``."""
        if signature_doc is None:
            raise SignatureError(UNSIGNED, f"bundle {bundle} is not signed (no signature.json)")
        algorithm, kid, signature = _parse(bundle, signature_doc)
        if algorithm != ALGORITHM:
            raise SignatureError(MALFORMED, f"bundle {bundle}: signature.json algorithm {algorithm!r} is not ed25519")
        public_key = self.keys.get(kid)
        if public_key is None:
            trusted = ", ".join(self.ids)
            raise SignatureError(UNKNOWN_KEY, f"bundle {bundle} is signed by key {kid}, not a trusted key ({trusted})")
        try:
            public_key.verify(signature, signed_message(manifest_bytes, model_bytes))
        except InvalidSignature:
            raise SignatureError(
                MISMATCH,
                f"bundle {bundle}: the signature by key {kid} does not match manifest.json and model.tflite "
                "(changed after signing)",
            ) from None
        return kid


def _parse(bundle: str, doc: bytes) -> tuple[str, str, bytes]:
    def malformed(why: str) -> SignatureError:
        return SignatureError(MALFORMED, f"bundle {bundle}: signature.json {why}")

    if len(doc) > MAX_SIGNATURE_BYTES:
        raise malformed(f"is larger than {MAX_SIGNATURE_BYTES} bytes")
    try:
        data = json.loads(doc)
    except ValueError:
        raise malformed("is not valid JSON") from None
    if not isinstance(data, dict):
        raise malformed("is not a JSON object")
    fields = {}
    for name in ("algorithm", "key_id", "signature"):
        value = data.get(name)
        if not isinstance(value, str) or not value:
            raise malformed(f"field {name!r} must be a non-empty string")
        fields[name] = value
    try:
        signature = base64.b64decode(fields["signature"], validate=True)
    except (binascii.Error, ValueError):
        raise malformed("signature is not base64") from None
    if len(signature) != 64:
        raise malformed(f"signature is {len(signature)} bytes, an Ed25519 signature is 64")
    return fields["algorithm"], fields["key_id"], signature


def load_signing_key(path: str, setting: str = "--signing-key") -> SigningKey:
    """The Ed25519 private key in a PEM file (``openssl genpkey -algorithm ed25519``); ``ConfigError`` if not."""
    data = _read_key_file(path, setting)
    if b"PUBLIC KEY-----" in data and b"PRIVATE KEY-----" not in data:
        raise ConfigError(f"{setting}: {path} holds a public key; signing needs the private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ConfigError(f"{setting}: {path} is an encrypted private key; give an unencrypted one") from None
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(f"{setting}: {path} is not a PEM private key (openssl genpkey -algorithm ed25519)") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{setting}: {path} is {_kind(key)} key, not Ed25519")
    return SigningKey(key, key_id(key.public_key()))


def load_public_key(path: str, setting: str = "trusted_keys") -> Ed25519PublicKey:
    """The Ed25519 public key in a PEM file (``openssl pkey -in key.pem -pubout``); ``ConfigError`` if not."""
    data = _read_key_file(path, setting)
    if b"PRIVATE KEY-----" in data:
        raise ConfigError(
            f"{setting}: {path} holds a private key; give its public key (openssl pkey -in KEY.pem -pubout)"
        )
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(f"{setting}: {path} is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{setting}: {path} is {_kind(key)} key, not Ed25519")
    return key


def key_files(text: str) -> tuple[str, ...]:
    """The file names of a comma-separated ``trusted_keys`` value (blanks dropped)."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


def load_trusted_keys(text: str, setting: str = "trusted_keys") -> TrustedKeys:
    """The public keys named by a ``trusted_keys`` value; ``ConfigError`` naming the first bad file."""
    paths = key_files(text)
    if not paths:
        raise ConfigError(f"{setting}: {text!r} names no key file")
    return TrustedKeys.of(load_public_key(p, setting) for p in paths)


def _read_key_file(path: str, setting: str) -> bytes:
    p = Path(path)
    try:
        if p.stat().st_size > MAX_KEY_FILE_BYTES:
            raise ConfigError(f"{setting}: {path} is larger than {MAX_KEY_FILE_BYTES} bytes, not a key file")
        return p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{setting}: cannot read {path}: {exc.strerror or exc}") from None


# The other key types cryptography loads from PEM, as a message names them.
_KINDS = {"RSA": "an RSA", "EC": "an EC", "DSA": "a DSA", "DH": "a DH", "Ed448": "an Ed448",
          "X25519": "an X25519", "X448": "an X448"}  # fmt: skip


def _kind(key: object) -> str:
    name = type(key).__name__
    return next((text for prefix, text in _KINDS.items() if name.startswith(prefix)), f"a {name}")
