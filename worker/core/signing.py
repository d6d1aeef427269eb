"""Ed25519 signatures over model bundles: ``fraud-train --signing-key`` signs, the worker verifies.

A signed bundle holds ``signature.json`` beside its other files, and it covers every one of them::

    {"algorithm": "ed25519", "files": {"manifest.json": "<sha256 hex>", "model.tflite": "...",
     "report.html": "...", ...}, "format": 2, "key_id": "<16 hex>", "signature": "<base64 of 64 bytes>"}

The signature is over ``DOMAIN`` followed by one line ``<sha256 hex>  <name>\n`` per file, sorted
by name (``sha256sum``'s format): every file of the bundle directory but ``signature.json``, exactly
as it lies on disk. A file changed, added or removed after signing (a weight in the manifest, a
byte of the model, the report an operator reads) is refused, naming the file. The fixed prefix
keeps a bundle signature from being valid for any other message signed with the same key. The
first format (no ``format``, over manifest.json and model.tflite only) is refused with reason
``old_format``: ``fraud-worker sign-bundle`` signs such a bundle again.
``key_id`` is the first 16 hex digits of the sha256 of the public key's 32 raw bytes; it only picks
the trusted key to try and is not trusted itself.

Keys are PEM files as openssl writes them: ``openssl genpkey -algorithm ed25519 -out key.pem``
(PKCS#8, unencrypted) signs, ``openssl pkey -in key.pem -pubout -out key.pub`` (SubjectPublicKeyInfo)
verifies. A key file that cannot be used is a ``ConfigError`` naming the file. Verifying is pure:
bytes in, the signing key's id or a ``SignatureError`` out (``worker.core.bundle`` does the reading).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from worker.core.errors import ConfigError, SignatureError

ALGORITHM = "ed25519"
FORMAT = 2
DOMAIN = b"fraud-scoring bundle v2\n"
MAX_SIGNATURE_BYTES = 64 * 1024
MAX_SIGNED_FILES = 256
MAX_KEY_FILE_BYTES = 64 * 1024
MANIFEST_NAME, MODEL_NAME = "manifest.json", "model.tflite"  # worker.core.bundle's MANIFEST_FILE, MODEL_FILE
# A file name a signature may list: the bundle directory holds plain names only (no '/', no leading '.').
FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_HEX = re.compile(r"[0-9a-f]{64}")
RESIGN = "fraud-worker sign-bundle --signing-key KEY.pem --models-dir DIR VERSION"
# SignatureError.reason values (the reason label of fraud_model_signature_failures_total); ``rollback``
# is worker.core.bundle's min_model_version check.
UNSIGNED, MALFORMED, UNKNOWN_KEY, MISMATCH = "unsigned", "malformed", "unknown_key", "mismatch"
OLD_FORMAT, ROLLBACK = "old_format", "rollback"
REASONS = (UNSIGNED, MALFORMED, UNKNOWN_KEY, MISMATCH, OLD_FORMAT, ROLLBACK)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def signed_message(files: Mapping[str, str]) -> bytes:
    """The bytes a bundle signature is over: the domain prefix, then ``<sha256 hex>  <name>`` per file, by name."""
    return DOMAIN + "".join(f"{files[name]}  {name}\n" for name in sorted(files)).encode("ascii")


def bundle_files(manifest_bytes: bytes, model_bytes: bytes, others: Mapping[str, str] | None = None) -> dict[str, str]:
    """The files a signature covers (name -> sha256 hex): manifest.json, model.tflite and ``others``."""
    return {**(others or {}), MANIFEST_NAME: sha256_hex(manifest_bytes), MODEL_NAME: sha256_hex(model_bytes)}


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class SigningKey:
    """A private key that signs bundles (``fraud-train --signing-key``)."""

    private_key: Ed25519PrivateKey
    key_id: str

    def sign(self, manifest_bytes: bytes, model_bytes: bytes, others: Mapping[str, bytes] | None = None) -> bytes:
        """The ``signature.json`` content for a bundle of these files (``others``: name -> content)."""
        digests = {name: sha256_hex(content) for name, content in (others or {}).items()}
        return self.sign_files(bundle_files(manifest_bytes, model_bytes, digests))

    def sign_files(self, files: Mapping[str, str]) -> bytes:
        """The ``signature.json`` content for a bundle whose files have these sha256 digests (name -> hex)."""
        bad = [name for name in files if not FILE_NAME.fullmatch(name) or not _HEX.fullmatch(files[name])]
        if bad or len(files) > MAX_SIGNED_FILES:
            raise ValueError(f"cannot sign {len(files)} files: bad names or digests {bad[:3]!r}")
        signature = self.private_key.sign(signed_message(files))
        doc = {"algorithm": ALGORITHM, "files": dict(sorted(files.items())), "format": FORMAT, "key_id": self.key_id,
               "signature": base64.b64encode(signature).decode()}  # fmt: skip
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

    def verify(
        self,
        bundle: str,
        manifest_bytes: bytes,
        model_bytes: bytes,
        signature_doc: bytes | None,
        others: Mapping[str, str] | None = None,
    ) -> str:
        """The id of the trusted key that signed this bundle; else ``SignatureError`` naming ``bundle``.

        ``others`` are the bundle's other files as found on disk (name -> sha256 hex), every file
        but manifest.json, model.tflite and signature.json: the signature must list exactly these.
        """
        return self.verify_files(f"bundle {bundle}", signature_doc, bundle_files(manifest_bytes, model_bytes, others))

    def verify_files(self, what: str, signature_doc: bytes | None, found: Mapping[str, str]) -> str:
        """The id of the trusted key whose signature lists exactly the files ``found`` (name -> sha256 hex), else
        ``SignatureError`` naming ``what`` (``bundle <version>``, ``rule set <version>``)."""
        if signature_doc is None:
            raise SignatureError(UNSIGNED, f"{what} is not signed (no signature.json)")
        algorithm, kid, signature, signed = _parse(what, signature_doc)
        if algorithm != ALGORITHM:
            why = f"{what}: signature.json algorithm {repr(algorithm)[:40]} is not ed25519"
            raise SignatureError(MALFORMED, why)
        public_key = self.keys.get(kid)
        if public_key is None:
            trusted = ", ".join(self.ids)
            raise SignatureError(UNKNOWN_KEY, f"{what} is signed by key {kid}, not a trusted key ({trusted})")
        try:
            public_key.verify(signature, signed_message(signed))
        except InvalidSignature:
            raise SignatureError(
                MISMATCH, f"{what}: the signature by key {kid} does not match its file list (signature.json "
                "changed after signing)",
            ) from None  # fmt: skip
        for name in sorted(set(found) | set(signed)):
            if name not in signed:
                why = "is not covered by the signature (added after signing)"
            elif name not in found:
                why = "is signed but missing (removed after signing)"
            elif found[name] != signed[name]:
                why = "differs from the signed one (changed after signing)"
            else:
                continue
            raise SignatureError(MISMATCH, f"{what}: {name} {why}; the signature is by key {kid}")
        return kid


def _parse(what: str, doc: bytes) -> tuple[str, str, bytes, dict[str, str]]:
    def malformed(why: str) -> SignatureError:
        return SignatureError(MALFORMED, f"{what}: signature.json {why}")

    if len(doc) > MAX_SIGNATURE_BYTES:
        raise malformed(f"is larger than {MAX_SIGNATURE_BYTES} bytes")
    try:
        data = json.loads(doc)
    except (ValueError, RecursionError):
        raise malformed("is not valid JSON") from None
    if not isinstance(data, dict):
        raise malformed("is not a JSON object")
    fields = {}
    for name in ("algorithm", "key_id", "signature"):
        value = data.get(name)
        if not isinstance(value, str) or not value:
            raise malformed(f"field {name!r} must be a non-empty string")
        fields[name] = value
    if not re.fullmatch(r"[0-9a-f]{16}", fields["key_id"]):
        raise malformed("key_id is not 16 hex digits")
    if "format" not in data and "files" not in data:
        raise SignatureError(
            OLD_FORMAT, f"{what}: signature.json is the first format, over manifest.json and model.tflite "
            f"only; sign the bundle again to cover every file: {RESIGN}",
        )  # fmt: skip
    fmt = data.get("format")
    if isinstance(fmt, bool) or fmt != FORMAT:
        raise malformed(f"format {repr(fmt)[:20]} is not {FORMAT}")
    files = data.get("files")
    if not isinstance(files, dict) or not files or len(files) > MAX_SIGNED_FILES:
        raise malformed(f"field 'files' must be an object of 1 to {MAX_SIGNED_FILES} file names")
    for name, digest in files.items():
        if not FILE_NAME.fullmatch(name) or not isinstance(digest, str) or not _HEX.fullmatch(digest):
            raise malformed(f"field 'files' has an entry {repr(name)[:60]} that is not a file name and its sha256 hex")
    try:
        signature = base64.b64decode(fields["signature"], validate=True)
    except (binascii.Error, ValueError):
        raise malformed("signature is not base64") from None
    if len(signature) != 64:
        raise malformed(f"signature is {len(signature)} bytes, an Ed25519 signature is 64")
    return fields["algorithm"], fields["key_id"], signature, files


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
