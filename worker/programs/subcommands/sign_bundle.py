"""``fraud-worker sign-bundle``: sign a bundle already in the models directory, covering every file.

For a bundle written unsigned or signed in the first signature format (over manifest.json and
model.tflite only), which workers with ``--trusted-keys`` refuse with reason ``old_format``. The
bundle must first pass the checks a worker without trusted keys makes before serving it (manifest,
sha256, probe); then ``signature.json`` (``worker.core.signing``) is written over every file of the
bundle directory as it is now, to a temporary file renamed into place, so a reader sees the old
signature or the new one. Whoever runs it vouches for those files: it signs what is there.

Exit codes: 0 signed, 1 the bundle fails its checks (the line says why), 2 bad settings.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from worker.core.errors import BundleError, ConfigError
from worker.core.files import replace_file
from worker.edges.config import SETTINGS_EPILOG, SettingsParser, add_settings
from worker.programs.settings import parse_settings

PROG = "fraud-worker sign-bundle"


def build_parser() -> SettingsParser:
    p = SettingsParser(
        prog=PROG,
        description="Write a bundle's signature.json over every file of the bundle (manifest.json, model.tflite, "
        "the report), after the checks a worker makes before serving it.",
        epilog=SETTINGS_EPILOG + " Exit codes: 0 signed, 1 the bundle fails its checks, 2 bad settings.",
    )
    add_settings(p, ["models_dir"])
    p.add_argument("--signing-key", required=True, help="the Ed25519 private key, a PEM file (openssl genpkey)")
    p.add_argument("version", help="the bundle to sign: a directory name under the models directory")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parsed = parse_settings(PROG, build_parser(), argv)
    if isinstance(parsed, int):
        return parsed
    args, config = parsed
    from worker.core.bundle import SIGNATURE_FILE, bundle_digests, check_version_name
    from worker.core.scoring import load_scorer
    from worker.core.signing import load_signing_key

    try:
        key = load_signing_key(args.signing_key)
        version = check_version_name(args.version)
    except (ConfigError, BundleError) as exc:
        print(f"{PROG}: bad setting: {exc}", file=sys.stderr)
        return 2
    models = Path(config.models_dir)
    try:
        load_scorer(str(models), version)  # the checks a worker without trusted keys makes
        files = bundle_digests(models / version, version)
        doc = key.sign_files(files)
    except BundleError as exc:
        print(f"{PROG}: refused: bundle {version} fails its checks: {exc}", file=sys.stderr)
        return 1
    # The temporary file outside the bundle: never a stray file in it.
    replace_file(models / version / SIGNATURE_FILE, doc, temp_dir=models)
    names = ", ".join(sorted(files))
    print(f"{PROG}: bundle {version} signed with key {key.key_id}, covering {len(files)} files: {names}")
    return 0
