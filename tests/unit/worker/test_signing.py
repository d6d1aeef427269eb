"""Signed bundles (worker/core/signing.py): the signature format, tamper detection, key files, the setting.

A bundle whose weights were swapped with its sha256 fields fixed up passes every other check (shown
here first), so only the signature tells it from the one that was trained.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.support.bundles import corrupt_sha256, make_bundle, swap_weights
from tests.support.keys import KeyPair, make_keys
from worker.core.bundle import MANIFEST_FILE, MODEL_FILE, SIGNATURE_FILE, Manifest, load_bundle, write_bundle
from worker.core.errors import BundleError, ConfigError, SignatureError
from worker.core.scoring import load_scorer
from worker.core.signing import (
    DOMAIN,
    REASONS,
    TrustedKeys,
    load_public_key,
    load_signing_key,
    load_trusted_keys,
    signed_message,
)
from worker.edges.config import load_config


@pytest.fixture
def keys(tmp_path: Path) -> KeyPair:
    return make_keys(tmp_path / "keys", "trainer")


@pytest.fixture
def other_keys(tmp_path: Path) -> KeyPair:
    return make_keys(tmp_path / "keys", "someone-else")


@pytest.fixture
def signed(tmp_path: Path, bundle_spec, keys) -> Path:
    """A models directory whose CURRENT is ``v1``, signed with ``keys``."""
    models = tmp_path / "models"
    make_bundle(models, "v1", signing_key=keys.signing_key, **bundle_spec)
    return models


def refused(models: Path, keys: TrustedKeys, version: str = "v1") -> SignatureError:
    with pytest.raises(SignatureError) as info:
        load_scorer(str(models), version, trusted_keys=keys)
    assert version in str(info.value)
    return info.value


# The format -----------------------------------------------------------------------------------


def test_a_signed_bundle_serves_and_names_its_key(signed, keys):
    scorer = load_scorer(str(signed), trusted_keys=keys.trusted())
    assert scorer.version == "v1" and scorer.bundle.signed_by == keys.key_id
    assert load_bundle(signed).signed_by is None  # nothing asked, nothing checked


def test_signature_file_is_the_documented_format(signed, keys):
    """Verified here from the documented recipe alone, not through worker.core.signing's own helpers."""
    bundle = signed / "v1"
    doc = json.loads((bundle / SIGNATURE_FILE).read_text())
    assert set(doc) == {"algorithm", "files", "format", "key_id", "signature"} and doc["algorithm"] == "ed25519"
    assert doc["format"] == 2
    public = serialization.load_pem_public_key(keys.public.read_bytes())
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert doc["key_id"] == hashlib.sha256(raw).hexdigest()[:16]
    # sha256sum's lines for every file of the bundle but signature.json, sorted by name
    names = sorted(p.name for p in bundle.iterdir() if p.name != SIGNATURE_FILE)
    digests = {name: hashlib.sha256((bundle / name).read_bytes()).hexdigest() for name in names}
    assert doc["files"] == digests and names == [MANIFEST_FILE, MODEL_FILE]
    message = b"fraud-scoring bundle v2\n" + "".join(f"{digests[n]}  {n}\n" for n in names).encode()
    assert message == signed_message(digests) and message.startswith(DOMAIN)
    signature = base64.b64decode(doc["signature"], validate=True)
    assert len(signature) == 64
    public.verify(signature, message)  # raises InvalidSignature if the recipe is not what was signed


def test_openssl_made_keys_sign_and_verify(tmp_path, bundle_spec):
    """The key files exactly as the openssl commands of docs/security.md make them."""
    private, public = tmp_path / "key.pem", tmp_path / "key.pub"
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(private)], check=True)
    subprocess.run(["openssl", "pkey", "-in", str(private), "-pubout", "-out", str(public)], check=True)
    signing_key = load_signing_key(str(private))
    make_bundle(tmp_path / "models", "v1", signing_key=signing_key, **bundle_spec)
    scorer = load_scorer(str(tmp_path / "models"), trusted_keys=load_trusted_keys(str(public)))
    assert scorer.bundle.signed_by == signing_key.key_id


def test_the_signature_is_written_inside_the_bundle_before_its_rename(tmp_path, bundle_spec, keys, monkeypatch):
    import os

    from tests.support.bundles import tflite_for

    model = tflite_for(bundle_spec["weights"], bundle_spec["bias"])
    manifest = Manifest(
        version="v7", created_at="2026-01-01T00:00:00Z", feature_names=tuple(bundle_spec["feature_names"]),
        scaler_mean=tuple(bundle_spec["mean"]), scaler_scale=tuple(bundle_spec["scale"]),
        weights=tuple(bundle_spec["weights"]), bias=bundle_spec["bias"], threshold=0.5, threshold_policy={},
        model_sha256=hashlib.sha256(model).hexdigest(),
    )  # fmt: skip
    models = tmp_path / "models"
    with pytest.raises(BundleError, match="signature.json"):
        write_bundle(models, manifest, model, {SIGNATURE_FILE: b"{}"}, signing_key=keys.signing_key)
    assert list(models.iterdir()) == []  # the temporary directory went too
    renamed = []
    rename = os.rename

    def spy(src, dst):
        renamed.append((Path(src).name, sorted(p.name for p in Path(src).iterdir()), Path(dst).name))
        rename(src, dst)

    monkeypatch.setattr(os, "rename", spy)
    path = write_bundle(models, manifest, model, signing_key=keys.signing_key)
    monkeypatch.undo()
    ((tmp_name, files, final),) = renamed
    assert tmp_name.startswith(".tmp-v7-") and files == [MANIFEST_FILE, MODEL_FILE, SIGNATURE_FILE] and final == "v7"
    assert sorted(p.name for p in models.iterdir()) == ["v7"]
    assert sorted(p.name for p in path.iterdir()) == [MANIFEST_FILE, MODEL_FILE, SIGNATURE_FILE]
    assert load_bundle(models, "v7", keys.trusted()).signed_by == keys.key_id


# Tampering ------------------------------------------------------------------------------------


def test_swapped_weights_with_fixed_sha256_pass_every_other_check_but_not_the_signature(signed, keys, bundle_spec):
    other = [w + 0.5 for w in bundle_spec["weights"]]
    swap_weights(signed / "v1", other, bundle_spec["bias"])
    scorer = load_scorer(str(signed))  # sha256, feature count and probe: all consistent
    assert list(scorer.bundle.manifest.weights) == other
    assert refused(signed, keys.trusted()).reason == "mismatch"


def test_a_manifest_edit_is_refused(signed, keys):
    path = signed / "v1" / MANIFEST_FILE
    data = json.loads(path.read_text())
    data["threshold"] = 0.99  # raise the bar: fewer alerts
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    load_scorer(str(signed))
    error = refused(signed, keys.trusted())
    assert error.reason == "mismatch" and "changed after signing" in str(error)


def test_the_exact_manifest_bytes_are_signed(signed, keys):
    """The same JSON written another way is another manifest: the signature covers bytes, not meaning."""
    path = signed / "v1" / MANIFEST_FILE
    path.write_text(json.dumps(json.loads(path.read_text())))
    assert refused(signed, keys.trusted()).reason == "mismatch"


def test_a_flipped_model_byte_is_refused_by_the_signature(signed, keys):
    corrupt_sha256(signed / "v1")
    assert refused(signed, keys.trusted()).reason == "mismatch"


def test_an_unsigned_bundle_is_refused(signed, keys, bundle_spec):
    make_bundle(signed, "v2", **bundle_spec)
    assert refused(signed, keys.trusted(), "v2").reason == "unsigned"
    (signed / "v1" / SIGNATURE_FILE).unlink()
    error = refused(signed, keys.trusted())
    assert error.reason == "unsigned" and "not signed" in str(error)


def test_a_bundle_signed_by_another_key_is_refused(signed, keys, other_keys):
    error = refused(signed, other_keys.trusted())
    assert error.reason == "unknown_key" and keys.key_id in str(error) and other_keys.key_id in str(error)
    both = load_trusted_keys(f"{other_keys.public},{keys.public}")
    assert load_scorer(str(signed), trusted_keys=both).bundle.signed_by == keys.key_id


def test_a_signature_by_another_key_under_a_trusted_key_id_is_refused(signed, keys, other_keys):
    """key_id only picks the key to try: claiming a trusted one does not make a signature valid."""
    bundle = signed / "v1"
    forged = json.loads(other_keys.signing_key.sign((bundle / MANIFEST_FILE).read_bytes(),
                                                    (bundle / MODEL_FILE).read_bytes()))  # fmt: skip
    forged["key_id"] = keys.key_id
    (bundle / SIGNATURE_FILE).write_text(json.dumps(forged))
    assert refused(signed, keys.trusted()).reason == "mismatch"


def test_a_signed_bundle_under_another_directory_name_is_refused(signed, keys):
    shutil.copytree(signed / "v1", signed / "v9")  # the manifest (signed) says v1
    with pytest.raises(BundleError, match="holds a manifest for version v1"):
        load_scorer(str(signed), "v9", trusted_keys=keys.trusted())


def _doc(**changes) -> bytes:
    doc = {"algorithm": "ed25519", "key_id": "0123456789abcdef", "format": 2, "files": {MANIFEST_FILE: "0" * 64},
           "signature": base64.b64encode(bytes(64)).decode(), **changes}  # fmt: skip
    return json.dumps({k: v for k, v in doc.items() if v is not None}).encode()


@pytest.mark.parametrize(
    "content,needle",
    [
        (b"not json", "not valid JSON"),
        (b"[" * 3000, "not valid JSON"),
        (b"[]", "not a JSON object"),
        (_doc(signature=None), "'signature'"),
        (_doc(algorithm="rsa"), "rsa"),
        (_doc(signature="%%%"), "not base64"),
        (_doc(signature=base64.b64encode(bytes(10)).decode()), "10 bytes"),
        (_doc(key_id="ab\x1b[2J"), "key_id is not 16 hex digits"),
        (_doc(format=3), "format 3"),
        (_doc(files=[]), "'files'"),
        (_doc(files={"../etc/passwd": "0" * 64}), "'../etc/passwd'"),
        (_doc(files={MANIFEST_FILE: "xyz"}), "'manifest.json'"),
        (b" " * 70_000, "larger than"),
    ],
)
def test_a_malformed_signature_file_is_refused(signed, keys, content, needle):
    (signed / "v1" / SIGNATURE_FILE).write_bytes(content)
    error = refused(signed, keys.trusted())
    assert error.reason == "malformed" and needle in str(error), str(error)
    assert error.reason in REASONS


# Key files ------------------------------------------------------------------------------------


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def _pem_private(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())  # fmt: skip


def _pem_public(key) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC = ec.generate_private_key(ec.SECP256R1())


@pytest.mark.parametrize(
    "make,needle",
    [
        (lambda d, k: str(d / "absent.pub"), "cannot read"),
        (lambda d, k: _write(d / "garbage.pub", b"hello\n"), "is not a PEM public key"),
        (lambda d, k: _write(d / "cert.pub", b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"),
         "is not a PEM public key"),
        (lambda d, k: str(k.private), "holds a private key"),
        (lambda d, k: _write(d / "rsa.pub", _pem_public(RSA)), "an RSA key, not Ed25519"),
        (lambda d, k: _write(d / "ec.pub", _pem_public(EC)), "an EC key, not Ed25519"),
        (lambda d, k: str(d), "cannot read"),
    ],
    ids=["missing", "not-pem", "bad-pem-body", "private-key", "rsa", "ec", "a-directory"],
)  # fmt: skip
def test_a_bad_public_key_file_is_a_config_error_naming_it(tmp_path, keys, make, needle):
    path = make(tmp_path, keys)
    with pytest.raises(ConfigError) as info:
        load_public_key(path)
    message = str(info.value)
    assert needle in message and path in message and "\n" not in message, message


@pytest.mark.parametrize(
    "make,needle",
    [
        (lambda d, k: str(d / "absent.pem"), "cannot read"),
        (lambda d, k: _write(d / "garbage.pem", b"hello\n"), "is not a PEM private key"),
        (lambda d, k: str(k.public), "holds a public key"),
        (lambda d, k: _write(d / "rsa.pem", _pem_private(RSA)), "an RSA key, not Ed25519"),
        (lambda d, k: _write(d / "locked.pem", k.signing_key.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"))), "encrypted"),
    ],
    ids=["missing", "not-pem", "public-key", "rsa", "encrypted"],
)  # fmt: skip
def test_a_bad_signing_key_file_is_a_config_error_naming_it(tmp_path, keys, make, needle):
    path = make(tmp_path, keys)
    with pytest.raises(ConfigError) as info:
        load_signing_key(path)
    message = str(info.value)
    assert needle in message and path in message and "--signing-key" in message and "\n" not in message, message


# The trusted_keys setting ---------------------------------------------------------------------


def test_trusted_keys_from_the_flag_or_the_environment(keys, other_keys):
    both = f"{keys.public}, {other_keys.public}"
    assert load_config(["--trusted-keys", both], {}).trusted_keys == both
    assert load_config([], {"FRAUD_TRUSTED_KEYS": str(keys.public)}).trusted_keys == str(keys.public)
    assert load_config([], {}).trusted_keys == ""  # off by default
    assert set(load_trusted_keys(both).ids) == {keys.key_id, other_keys.key_id}


def test_a_bad_trusted_key_file_fails_at_start_naming_it(tmp_path, keys):
    bad = _write(tmp_path / "not-a-key.pub", b"hello\n")
    with pytest.raises(ConfigError, match="trusted_keys: .*not-a-key.pub is not a PEM public key"):
        load_config(["--trusted-keys", f"{keys.public},{bad}"], {})
    with pytest.raises(ConfigError, match="absent.pub"):
        load_config([], {"FRAUD_TRUSTED_KEYS": str(tmp_path / "absent.pub")})
    with pytest.raises(ConfigError, match="names no key file"):
        load_config(["--trusted-keys", " , "], {})
