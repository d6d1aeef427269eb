"""The model bundle contract, shared by the training job (writer) and the worker (reader).

Layout under a models directory::

    <models>/<version>/model.tflite     the LiteRT model: float32 [batch, n_features] -> [batch, 1]
    <models>/<version>/manifest.json    everything needed to serve it (see ``Manifest``)
    <models>/<version>/signature.json   optional: an Ed25519 signature over every other file (``worker.core.signing``)
    <models>/<version>/...              evaluation report (metrics.json, plots, report.html)
    <models>/CURRENT                    the active version's name, replaced atomically
    <models>/CHALLENGER                 optional: the shadow challenger's version, the same way

A version name matches ``VERSION_PATTERN`` (so it is a safe directory name, log field and metric
label), and a pointer file is a small regular file holding one (``read_current``).

A bundle directory is written under a temporary name and renamed into place, so a reader never
sees half a bundle. Nothing here executes or unpickles anything from the models directory: the
manifest is JSON and the model is a flatbuffer handed to the LiteRT interpreter.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from worker.core.errors import BundleError, SignatureError
from worker.core.features import FeatureSpec
from worker.core.files import replace_file
from worker.core.transforms import FeatureTransform, finite_float, read_transforms

if TYPE_CHECKING:
    from worker.core.signing import SigningKey, TrustedKeys

FORMAT_VERSION = 1
MODEL_FILE = "model.tflite"
MANIFEST_FILE = "manifest.json"
SIGNATURE_FILE = "signature.json"
CURRENT_FILE = "CURRENT"
CHALLENGER_FILE = "CHALLENGER"  # the shadow challenger's version (worker/pipeline/shadow.py)
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
# A bundle version: the directory's name and what CURRENT and CHALLENGER hold. The training job's
# ``20261201T211302Z-a4d76f4c`` (UTC time first, so names sort by time) matches, as any short name
# of letters, digits, '.', '_' and '-' not starting with '.' (never '.', '..' or a ``.tmp-`` name).
VERSION_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
MAX_POINTER_BYTES = 256
# model.tflite of one dense layer is about 4 bytes a feature plus a few KiB; any other file of a
# bundle (report.html, plots) a few MiB. Past these a file is refused unread: reading or hashing it
# would hold the worker's memory or its loop.
MAX_MODEL_BYTES = 64 * 1024 * 1024
MAX_BUNDLE_FILE_BYTES = 64 * 1024 * 1024
# Smallest scaler_scale accepted: 1 / scale must be a float32 (training writes 1 for a constant column).
MIN_SCALE = 1e-30
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


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
    # Per-feature transforms applied before the scaler (worker/core/transforms.py); () = all identity.
    feature_transforms: tuple[FeatureTransform, ...] = ()
    # The feature spec (worker/core/features.py, docs/features.md) whose features are the last of
    # feature_names; None: the model reads only the event's own fields.
    feature_spec: dict[str, Any] | None = None
    # Thresholds per value of one event field (worker/core/decisions.py, docs/rules.md); None: the global one only.
    segment_thresholds: dict[str, Any] | None = None
    format_version: int = FORMAT_VERSION

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: object) -> Manifest:
        """Build and validate a manifest; a ``BundleError`` names the first bad field.

        The one place every field the worker reads is checked (types, finiteness, lengths, the
        histogram and the transforms), so a malformed manifest is a ``BundleError`` and nothing else.
        """
        if not isinstance(data, Mapping):
            raise BundleError("manifest is not a JSON object")
        fmt = data.get("format_version")
        if isinstance(fmt, bool) or not isinstance(fmt, int) or fmt != FORMAT_VERSION:
            raise BundleError(f"manifest format_version {shown(fmt)} is not supported (want {FORMAT_VERSION})")
        feature_names = _str_list(data, "feature_names")
        try:
            manifest = cls(
                version=_version(data),
                created_at=_str(data, "created_at"),
                feature_names=tuple(feature_names),
                scaler_mean=_floats(data, "scaler_mean"),
                scaler_scale=_floats(data, "scaler_scale"),
                weights=_floats(data, "weights"),
                bias=_float(data, "bias"),
                threshold=_float(data, "threshold"),
                threshold_policy=_object(data, "threshold_policy"),
                model_sha256=_str(data, "model_sha256"),
                metrics=_object(data, "metrics"),
                training=_object(data, "training"),
                score_histogram=_histogram(data),
                feature_transforms=read_transforms(data.get("feature_transforms"), len(feature_names)),
                feature_spec=_feature_spec(data),
                segment_thresholds=_segment_thresholds(data),
                format_version=FORMAT_VERSION,
            )
        except (TypeError, ValueError, OverflowError) as exc:  # a backstop: every check above is explicit
            raise BundleError(f"manifest is malformed: {shown(str(exc))}") from None
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
        if any(not s >= MIN_SCALE for s in self.scaler_scale):
            raise BundleError(f"manifest scaler_scale has a value below {MIN_SCALE:g} (or <= 0)")
        if not 0.0 <= self.threshold <= 1.0:
            raise BundleError(f"manifest threshold {self.threshold} is outside [0, 1]")
        if not _SHA256_HEX.fullmatch(self.model_sha256):
            raise BundleError("manifest model_sha256 is not a sha256 hex digest (64 lowercase hex digits)")
        if not VERSION_PATTERN.fullmatch(self.version):
            raise BundleError(f"manifest version {shown(self.version)} is not a version name")
        hist = self.score_histogram
        if hist and len(hist.get("counts", [])) != len(hist.get("edges", [])) - 1:
            raise BundleError("manifest score_histogram needs len(counts) == len(edges) - 1")
        spec = self.spec
        if spec is not None:
            names = spec.names
            if len(names) >= n or self.feature_names[n - len(names) :] != names:
                raise BundleError("manifest feature_names must end with the feature_spec's features")

    @property
    def spec(self) -> FeatureSpec | None:
        """The parsed ``feature_spec`` (None without one)."""
        return None if self.feature_spec is None else FeatureSpec.from_manifest(self.feature_spec)

    @property
    def own_features(self) -> tuple[str, ...]:
        """The event fields the model reads as they are: ``feature_names`` before the spec's features."""
        spec = self.spec
        return self.feature_names if spec is None else self.feature_names[: self.n_features - len(spec.names)]


def _segment_thresholds(data: Mapping[str, Any]) -> dict[str, Any] | None:
    from worker.core.decisions import SegmentThresholds

    segments = SegmentThresholds.from_manifest(data.get("segment_thresholds"))  # a BundleError names the problem
    return None if segments is None else segments.to_manifest()


def _feature_spec(data: Mapping[str, Any]) -> dict[str, Any] | None:
    spec = data.get("feature_spec")
    if spec is None:
        return None
    FeatureSpec.from_manifest(spec)  # a BundleError names what is wrong
    return dict(spec)


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
    """The version named by ``<models>/CURRENT`` (or another pointer: CHALLENGER), or None without the file.

    The pointer must be a regular file (not a symlink, FIFO, device or directory) of at most
    ``MAX_POINTER_BYTES`` whose stripped content matches ``VERSION_PATTERN``; anything else is a
    ``BundleError`` quoting at most 80 characters of it, escaped. It is opened with O_NOFOLLOW and
    O_NONBLOCK and checked again on the open file, so a symlink is never followed and a FIFO put
    there between the two looks cannot block the caller.
    """
    path = Path(models_dir) / pointer
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BundleError(f"cannot read {path}: {exc.strerror or exc}") from None
    _check_pointer_stat(path, st)
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None
    except OSError as exc:  # ELOOP: it became a symlink since the lstat
        raise BundleError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        _check_pointer_stat(path, os.fstat(fd))
        raw = os.read(fd, MAX_POINTER_BYTES + 1)
    except OSError as exc:
        raise BundleError(f"cannot read {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(raw) > MAX_POINTER_BYTES:
        raise BundleError(f"{path} is larger than {MAX_POINTER_BYTES} bytes: not a pointer file")
    try:
        text = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        text = ""
    if not VERSION_PATTERN.fullmatch(text):
        raise BundleError(f"{path} does not name a version: {shown(raw)}")
    return text


def _check_pointer_stat(path: Path, st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise BundleError(f"{path} is not a regular file ({_file_kind(st.st_mode)}): refused as a pointer")
    if st.st_size > MAX_POINTER_BYTES:
        raise BundleError(f"{path} is larger than {MAX_POINTER_BYTES} bytes: not a pointer file")


def _file_kind(mode: int) -> str:
    kinds = (
        (stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
    )  # fmt: skip
    return next((text for test, text in kinds if test(mode)), "not a regular file")


def check_version_name(version: str) -> str:
    """``version`` if it is a bundle version name (``VERSION_PATTERN``), else a ``BundleError``."""
    if not isinstance(version, str) or not VERSION_PATTERN.fullmatch(version):
        raise BundleError(f"{shown(version)} is not a bundle version name ({VERSION_PATTERN.pattern})")
    return version


def set_current(models_dir: str | os.PathLike[str], version: str, pointer: str = CURRENT_FILE) -> None:
    """Point CURRENT (or CHALLENGER) at ``version`` atomically (temp file + rename in the same directory)."""
    models = Path(models_dir)
    check_version_name(version)
    if not (models / version / MANIFEST_FILE).is_file():
        raise BundleError(f"cannot promote {version}: {models / version} is not a bundle")
    replace_file(models / pointer, (version + "\n").encode())


def read_manifest(bundle_dir: str | os.PathLike[str]) -> Manifest:
    path = Path(bundle_dir) / MANIFEST_FILE
    return _parse_manifest(_read_manifest_bytes(path), path)


def _read_manifest_bytes(path: Path) -> bytes:
    return _read_regular(path, MAX_MANIFEST_BYTES)


def _read_regular(path: Path, most: int) -> bytes:
    """A regular file's bytes; opened with O_NONBLOCK, so a FIFO is refused, never waited on. A file of
    more than ``most`` bytes is refused unread (or as it grows past them while read)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as fh:
            st = os.fstat(fh.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise BundleError(f"{path} is {_file_kind(st.st_mode)}, not a regular file")
            # read(n) sets aside n bytes first: ask for the size fstat gave (one more shows a file growing)
            raw = fh.read(st.st_size + 1) if st.st_size <= most else b""
    except OSError as exc:
        raise BundleError(f"cannot read {path}: {exc.strerror or exc}") from None
    if st.st_size > most or len(raw) > most:
        raise BundleError(f"{path} is larger than {most} bytes")
    return raw


def _parse_manifest(raw: bytes, path: Path) -> Manifest:
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise BundleError(f"{path} is not valid JSON: {exc}") from None
    except RecursionError:
        raise BundleError(f"{path} is not valid JSON: nested too deep") from None
    return Manifest.from_dict(data)


def _read_model(path: Path) -> bytes:
    return _read_regular(path, MAX_MODEL_BYTES)


def _read_signature(path: Path, version: str) -> bytes | None:
    """``signature.json``'s bytes (at most a little more than any signature needs), or None if absent."""
    from worker.core.signing import MALFORMED, MAX_SIGNATURE_BYTES

    if not os.path.lexists(path):
        return None
    try:
        return _read_regular(path, MAX_SIGNATURE_BYTES)
    except BundleError as exc:
        raise SignatureError(MALFORMED, f"bundle {version}: {exc}") from None


def _other_files(bundle_dir: Path, version: str) -> dict[str, str]:
    """name -> sha256 hex of every entry of a bundle directory but manifest, model and signature.

    Every entry must be a regular file with a plain name: a symlink, directory, FIFO or device
    cannot be covered by a signature and is refused (lstat, then opened with O_NOFOLLOW and O_NONBLOCK).
    """
    from worker.core.signing import FILE_NAME, MALFORMED, MAX_SIGNED_FILES, MISMATCH

    out: dict[str, str] = {}
    try:
        names = sorted(os.listdir(bundle_dir))
    except OSError as exc:
        raise SignatureError(MALFORMED, f"bundle {version}: cannot list {bundle_dir}: {exc.strerror or exc}") from None
    for name in names:
        if name in (MANIFEST_FILE, MODEL_FILE, SIGNATURE_FILE):
            continue
        if len(out) >= MAX_SIGNED_FILES or not FILE_NAME.fullmatch(name):
            raise SignatureError(MISMATCH, f"bundle {version}: {shown(name)} is not covered by the signature")
        path = bundle_dir / name
        try:
            if not stat.S_ISREG(os.lstat(path).st_mode):
                raise SignatureError(MISMATCH, f"bundle {version}: {name} is {_file_kind(os.lstat(path).st_mode)}, "
                                     "which a signature cannot cover")  # fmt: skip
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
            with os.fdopen(fd, "rb") as fh:
                st = os.fstat(fh.fileno())
                if not stat.S_ISREG(st.st_mode):
                    raise SignatureError(MISMATCH, f"bundle {version}: {name} is not a regular file")
                if st.st_size > MAX_BUNDLE_FILE_BYTES:  # hashing it would hold up the loop
                    raise SignatureError(MISMATCH, f"bundle {version}: {name} is larger than "
                                         f"{MAX_BUNDLE_FILE_BYTES} bytes")  # fmt: skip
                digest = hashlib.sha256()
                while chunk := fh.read(1 << 20):
                    digest.update(chunk)
                out[name] = digest.hexdigest()
        except OSError as exc:
            raise SignatureError(MISMATCH, f"bundle {version}: cannot read {name}: {exc.strerror or exc}") from None
    return out


def bundle_digests(bundle_dir: Path, version: str) -> dict[str, str]:
    """name -> sha256 hex of every file of a bundle directory but signature.json (what a signature covers)."""
    from worker.core.signing import bundle_files

    manifest = _read_manifest_bytes(bundle_dir / MANIFEST_FILE)
    return bundle_files(manifest, _read_model(bundle_dir / MODEL_FILE), _other_files(bundle_dir, version))


def load_bundle(
    models_dir: str | os.PathLike[str],
    version: str | None = None,
    trusted_keys: TrustedKeys | None = None,
    min_version: str | None = None,
) -> Bundle:
    """Read and verify one bundle (CURRENT's when ``version`` is None).

    Checks: the version is a version name, and not older than ``min_version`` (string order; the
    training job's names start with the UTC time); with ``trusted_keys``, a signature by one of
    them covering every file of the bundle directory, manifest.json's and model.tflite's bytes as
    read here (before the manifest is parsed); manifest present and well-formed, its version
    matches the directory, model file present and its sha256 equal to the manifest's. Model-level
    checks (input width, a probe score) belong to ``worker.core.scoring.load_scorer``.
    """
    from worker.core.signing import ROLLBACK

    models = Path(models_dir)
    if version is None:
        version = read_current(models)
        if version is None:
            raise BundleError(f"no {CURRENT_FILE} in {models}: train a model first (fraud-train)")
    check_version_name(version)
    if min_version and version < min_version:
        raise SignatureError(
            ROLLBACK, f"bundle {version} is older than min_model_version {min_version}: refused as a rollback"
        )
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
        others = _other_files(bundle_dir, version) if signature is not None else {}
        signed_by = trusted_keys.verify(version, raw, model_bytes, signature, others)
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
            if not VERSION_PATTERN.fullmatch(name) or name in (MODEL_FILE, MANIFEST_FILE, SIGNATURE_FILE):
                raise BundleError(f"bad extra file name {name!r}")
            (tmp / name).write_bytes(content)
        manifest_bytes = manifest.to_json().encode("utf-8")
        if signing_key is not None:
            # Over the exact bytes written below; signed before the rename, so no reader ever
            # sees the bundle under its version's name unsigned.
            (tmp / SIGNATURE_FILE).write_bytes(signing_key.sign(manifest_bytes, model_bytes, extra_files))
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


def shown(value: object, limit: int = 80) -> str:
    """``value`` for a log line or an error: its repr (control characters escaped), cut to ``limit`` characters."""
    text = repr(value) if not isinstance(value, int) or isinstance(value, bool) else _int_repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _int_repr(value: int) -> str:
    try:
        return repr(value)
    except ValueError:  # more digits than Python converts to text
        return f"<an integer of about {value.bit_length() * 3 // 10} digits>"


def _str(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise BundleError(f"manifest field {key!r} must be a non-empty string")
    return value


def _version(data: Mapping[str, Any]) -> str:
    value = _str(data, "version")
    if not VERSION_PATTERN.fullmatch(value):
        raise BundleError(f"manifest field 'version' {shown(value)} is not a version name ({VERSION_PATTERN.pattern})")
    return value


def _str_list(data: Mapping[str, Any], key: str) -> list[str]:
    value = data.get(key)
    if not isinstance(value, list) or not all(isinstance(v, str) and v and v.isprintable() for v in value):
        raise BundleError(f"manifest field {key!r} must be a list of names (printable, non-empty strings)")
    return value


def _float(data: Mapping[str, Any], key: str) -> float:
    value = finite_float(data.get(key))
    if value is None:
        raise BundleError(f"manifest field {key!r} must be a finite number within the float32 range")
    return value


def _floats(data: Mapping[str, Any], key: str, field: str | None = None) -> tuple[float, ...]:
    value = data.get(key)
    name = field or key
    if not isinstance(value, list):
        raise BundleError(f"manifest field {name!r} must be a list of numbers")
    out = []
    for v in value:
        f = finite_float(v)
        if f is None:
            raise BundleError(f"manifest field {name!r} must hold finite numbers within the float32 range")
        out.append(f)
    return tuple(out)


def _object(data: Mapping[str, Any], key: str) -> dict[str, Any]:
    """An optional JSON object (absent or null: empty); its content is descriptive, not read when serving."""
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise BundleError(f"manifest field {key!r} must be a JSON object")
    return dict(value)


def _histogram(data: Mapping[str, Any]) -> dict[str, list[float]]:
    """``score_histogram``: absent, null or {} (no drift check), else ``edges`` and ``counts`` lists of
    finite numbers with ``len(counts) == len(edges) - 1 >= 1``. Whether the bins suit PSI (edges
    increasing, counts not all zero) is ``worker.core.drift``'s question: a bad answer only turns drift off."""
    value = data.get("score_histogram")
    if value is None or (isinstance(value, Mapping) and not value):
        return {}
    if not isinstance(value, Mapping):
        raise BundleError("manifest field 'score_histogram' must be a JSON object")
    edges = _floats(value, "edges", "score_histogram.edges")
    counts = _floats(value, "counts", "score_histogram.counts")
    if len(edges) < 2 or len(counts) != len(edges) - 1:
        raise BundleError(
            f"manifest score_histogram needs len(counts) == len(edges) - 1 >= 1 (got {len(counts)} and {len(edges)})"
        )
    return {"edges": list(edges), "counts": list(counts)}
