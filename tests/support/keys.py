"""Ed25519 key files for the signing tests, in the PEM forms openssl writes.

``make_keys(directory, name)`` writes ``<name>.pem`` (PKCS#8, unencrypted: ``openssl genpkey
-algorithm ed25519``) and ``<name>.pub`` (SubjectPublicKeyInfo: ``openssl pkey -pubout``) and loads
the signing key through ``worker.core.signing``, as ``fraud-train --signing-key`` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from worker.core.signing import SigningKey, TrustedKeys, load_signing_key, load_trusted_keys


@dataclass(frozen=True)
class KeyPair:
    private: Path  # the PEM file fraud-train signs with
    public: Path  # the PEM file a worker trusts
    signing_key: SigningKey

    @property
    def key_id(self) -> str:
        return self.signing_key.key_id

    def trusted(self) -> TrustedKeys:
        return load_trusted_keys(str(self.public))


def make_keys(directory: Path, name: str = "key") -> KeyPair:
    directory.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    private, public = directory / f"{name}.pem", directory / f"{name}.pub"
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return KeyPair(private, public, load_signing_key(str(private)))
