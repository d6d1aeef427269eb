"""The model bundle contract, shared by the training job (writer) and the worker (reader).

Layout under a models directory::

    <models>/<version>/model.tflite     the LiteRT model: float32 [batch, n_features] -> [batch, 1]
    <models>/<version>/manifest.json    everything needed to serve it (see ``Manifest``)
    <models>/<version>/signature.json   optional: an Ed25519 signature over the two (``worker.signing``)
    <models>/<version>/...              evaluation report (metrics.json, plots, report.html)
    <models>/CURRENT                    the active version's name, replaced atomically

A bundle directory is written under a temporary name and renamed into place, so a reader never
sees half a bundle. Nothing here executes or unpickles anything from the models directory: the
manifest is JSON and the model is a flatbuffer handed to the LiteRT interpreter.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from worker.errors import BundleError, SignatureError
from worker.transforms import FeatureTransform, read_transforms

if TYPE_CHECKING:
    from worker.signing import SigningKey, TrustedKeys

FORMAT_VERSION = 1
MODEL_FILE = "model.tflite"
MANIFEST_FILE = "manifest.json"
SIGNATURE_FILE = "signature.json"
CURRENT_FILE = "CURRENT"
CHALLENGER_FILE = "CHALLENGER"  # the shadow challenger's version (worker/shadow.py)
MAX_MANIFEST_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Manifest:
    """What ``manifest.json`` holds. ``feature_names`` order is the model's input order."""

    version: str
    created_at: str
    feature_names: tuple[str, ...]
    scaler_mean: tuple[float, ...]
    scaler_scale: tuple[float, ...]
    weights: tuple[float, ...]
    bias: float
    threshold: float
    threshold_policy: dict[str, Any]
    model_sha256: str
    metrics: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    # Training-score histogram for drift checks: len(counts) == len(edges) - 1, edges over [0, 1].
    score_histogram: dict[str, list[float]] = field(default_factory=dict)
    # Per-feature transforms applied before the scaler (worker/transforms.py); () = all identity.
    feature_transforms: tuple[FeatureTransform, ...] = ()
    format_version: int = FORMAT_VERSION

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Manifest:
        """Build and validate a manifest; a ``BundleError`` names the first bad field."""
        if not isinstance(data, Mapping):
            raise BundleError("manifest is not a JSON object")
        fmt = data.get("format_version")
        if fmt != FORMAT_VERSION:
            raise BundleError(f"manifest format_version {fmt!r} is not supported (want {FORMAT_VERSION})")
        try:
            manifest = cls(
                version=_str(data, "version"),
                created_at=_str(data, "created_at"),
                feature_names=tuple(_str_list(data, "feature_names")),
                scaler_mean=_floats(data, "scaler_mean"),
                scaler_scale=_floats(data, "scaler_scale"),
                weights=_floats(data, "weights"),
                bias=_float(data, "bias"),
                threshold=_float(data, "threshold"),
                threshold_policy=dict(data.get("threshold_policy") or {}),
                model_sha256=_str(data, "model_sha256"),
                metrics=dict(data.get("metrics") or {}),
                training=dict(data.get("training") or {}),
                score_histogram=dict(data.get("score_histogram") or {}),
                feature_transforms=read_transforms(data.get("feature_transforms"), len(data["feature_names"])),
                format_version=FORMAT_VERSION,
            )
        except (TypeError, ValueError) as exc:
            raise BundleError(f"manifest is malformed: {exc}") from None
        manifest.validate()
        return manifest

    def validate(self) -> None:
        n = self.n_features
        if n == 0:
            raise BundleError("manifest has no feature_names")
        if len(set(self.feature_names)) != n:
            raise BundleError("manifest feature_names has duplicates")
        for name in ("scaler_mean", "scaler_scale", "weights"):
            if len(getattr(self, name)) != n:
                raise BundleError(f"manifest {name} has {len(getattr(self, name))} values for {n} features")
        if any(s <= 0 for s in self.scaler_scale):
            raise BundleError("manifest scaler_scale has a value <= 0")
        if not 0.0 <= self.threshold <= 1.0:
            raise BundleError(f"manifest threshold {self.threshold} is outside [0, 1]")
        if len(self.model_sha256) != 64:
            raise BundleError("manifest model_sha256 is not a sha256 hex digest")
        hist = self.score_histogram
        if hist and len(hist.get("counts", [])) != len(hist.get("edges", [])) - 1:
            raise BundleError("manifest score_histogram needs len(counts) == len(edges) - 1")


@dataclass(frozen=True)
class Bundle:
    """A bundle read from disk whose model bytes match the manifest's sha256."""

    path: Path
    manifest: Manifest
    model_bytes: bytes
    # The id of the trusted key whose signature was checked; None when no signature was asked for.
    signed_by: str | None = None

    @property
    def version(self) -> str:
        return self.manifest.version


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_current(models_dir: str | os.PathLike[str], pointer: str = CURRENT_FILE) -> str | None:
    """The version named by ``<models>/CURRENT`` (or another pointer: CHALLENGER), or None without the file."""
    path = Path(models_dir) / pointer
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BundleError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not text or "/" in text or text in (".", ".."):
        raise BundleError(f"{path} does not name a version: {text[:80]!r}")
    return text


def set_current(models_dir: str | os.PathLike[str], version: str, pointer: str = CURRENT_FILE) -> None:
    """Point CURRENT (or CHALLENGER) at ``version`` atomically (temp file + rename in the same directory)."""
    models = Path(models_dir)
    if not (models / version / MANIFEST_FILE).is_file():
        raise BundleError(f"cannot promote {version}: {models / version} is not a bundle")
    fd, tmp = tempfile.mkstemp(prefix=f".{pointer}.", dir=models)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(version + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, models / pointer)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_manifest(bundle_dir: str | os.PathLike[str]) -> Manifest:
    path = Path(bundle_dir) / MANIFEST_FILE
    return _parse_manifest(_read_manifest_bytes(path), path)


def _read_manifest_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BundleError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_MANIFEST_BYTES:
        raise BundleError(f"{path} is larger than {MAX_MANIFEST_BYTES} bytes")
    return raw


def _parse_manifest(raw: bytes, path: Path) -> Manifest:
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise BundleError(f"{path} is not valid JSON: {exc}") from None
    return Manifest.from_dict(data)


def _read_model(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise BundleError(f"cannot read {path}: {exc.strerror or exc}") from None


def _read_signature(path: Path, version: str) -> bytes | None:
    """``signature.json``'s bytes (at most a little more than any signature needs), or None if absent."""
    from worker.signing import MALFORMED, MAX_SIGNATURE_BYTES

    try:
        with open(path, "rb") as fh:
            return fh.read(MAX_SIGNATURE_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SignatureError(MALFORMED, f"bundle {version}: cannot read {path}: {exc.strerror or exc}") from None


def load_bundle(
    models_dir: str | os.PathLike[str], version: str | None = None, trusted_keys: TrustedKeys | None = None
) -> Bundle:
    """Read and verify one bundle (CURRENT's when ``version`` is None).

    Checks: with ``trusted_keys``, a signature by one of them over manifest.json's and
    model.tflite's bytes as read here (before the manifest is parsed); manifest present and
    well-formed, its version matches the directory, model file present and its sha256 equal to the
    manifest's. Model-level checks (input width, a probe score) belong to
    ``worker.scoring.load_scorer``.
    """
    models = Path(models_dir)
    if version is None:
        version = read_current(models)
        if version is None:
            raise BundleError(f"no {CURRENT_FILE} in {models}: train a model first (fraud-train)")
    bundle_dir = models / version
    if not bundle_dir.is_dir():
        raise BundleError(f"bundle {version} does not exist in {models}")
    manifest_path, model_path = bundle_dir / MANIFEST_FILE, bundle_dir / MODEL_FILE
    raw = _read_manifest_bytes(manifest_path)
    model_bytes, signed_by = None, None
    if trusted_keys is not None:
        # The signature covers the bytes served: the ones read here, not a second read of the files.
        model_bytes = _read_model(model_path)
        signature = _read_signature(bundle_dir / SIGNATURE_FILE, version)
        signed_by = trusted_keys.verify(version, raw, model_bytes, signature)
    manifest = _parse_manifest(raw, manifest_path)
    if manifest.version != version:
        raise BundleError(f"bundle directory {version} holds a manifest for version {manifest.version}")
    if model_bytes is None:
        model_bytes = _read_model(model_path)
    digest = sha256_hex(model_bytes)
    if digest != manifest.model_sha256:
        raise BundleError(
            f"bundle {version}: {MODEL_FILE} sha256 {digest[:12]}… does not match the manifest's "
            f"{manifest.model_sha256[:12]}…"
        )
    return Bundle(path=bundle_dir, manifest=manifest, model_bytes=model_bytes, signed_by=signed_by)


def write_bundle(
    models_dir: str | os.PathLike[str],
    manifest: Manifest,
    model_bytes: bytes,
    extra_files: Mapping[str, bytes] | None = None,
    signing_key: SigningKey | None = None,
) -> Path:
    """Write a complete bundle under a temporary name, then rename it to ``<models>/<version>``.

    ``manifest.model_sha256`` must be the sha256 of ``model_bytes``. With ``signing_key`` the
    bundle gets its ``signature.json`` before the rename. Does not touch CURRENT.
    """
    manifest.validate()
    if sha256_hex(model_bytes) != manifest.model_sha256:
        raise BundleError("manifest model_sha256 does not match the model bytes")
    models = Path(models_dir)
    models.mkdir(parents=True, exist_ok=True)
    final = models / manifest.version
    if final.exists():
        raise BundleError(f"bundle {manifest.version} already exists in {models}")
    tmp = models / f".tmp-{manifest.version}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        (tmp / MODEL_FILE).write_bytes(model_bytes)
        for name, content in (extra_files or {}).items():
            if "/" in name or name in (MODEL_FILE, MANIFEST_FILE, SIGNATURE_FILE):
                raise BundleError(f"bad extra file name {name!r}")
            (tmp / name).write_bytes(content)
        manifest_bytes = manifest.to_json().encode("utf-8")
        if signing_key is not None:
            # Over the exact bytes written below; signed before the rename, so no reader ever
            # sees the bundle under its version's name unsigned.
            (tmp / SIGNATURE_FILE).write_bytes(signing_key.sign(manifest_bytes, model_bytes))
        # The manifest goes last: a directory with a manifest is a complete bundle.
        (tmp / MANIFEST_FILE).write_bytes(manifest_bytes)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def list_versions(models_dir: str | os.PathLike[str]) -> list[str]:
    """Bundle directories present (complete ones only), oldest name first."""
    models = Path(models_dir)
    if not models.is_dir():
        return []
    return sorted(p.name for p in models.iterdir() if not p.name.startswith(".") and (p / MANIFEST_FILE).is_file())


def _str(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise BundleError(f"manifest field {key!r} must be a non-empty string")
    return value


def _str_list(data: Mapping[str, Any], key: str) -> list[str]:
    value = data.get(key)
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise BundleError(f"manifest field {key!r} must be a list of names")
    return value


def _float(data: Mapping[str, Any], key: str) -> float:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BundleError(f"manifest field {key!r} must be a finite number")
    return float(value)


def _floats(data: Mapping[str, Any], key: str) -> tuple[float, ...]:
    value = data.get(key)
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise BundleError(f"manifest field {key!r} must be a list of numbers")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise BundleError(f"manifest field {key!r} must hold finite numbers")
        out.append(float(v))
    return tuple(out)
