"""``fraud-worker rules``: check a rule-set file, or publish it to the models directory (docs/rules.md).

``rules check FILE`` parses the file and type-checks every condition (rule-engine), reads every list it names
from the lists directory, and prints each rule with its action and whether it is compiled; a problem is one
line naming the rule (exit 1).

``rules publish FILE`` does the same checks, then writes ``<models>/rules/<version>/rules.toml`` (version:
``<UTC time>-<sha256[:8]>`` of the file), signs it with ``--signing-key`` (``signature.json``, the bundle
signature format over ``rules.toml``), and points ``RULES`` (``--shadow``: ``RULES_SHADOW``) at it; every file
is written to a temporary name and renamed, so a worker reads the old rule set or the new one. Workers pick it
up within their reload interval.

Exit codes: 0 done, 1 the rule set or a list is refused (one line says why), 2 bad settings.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

from worker.core.errors import ConfigError
from worker.core.files import replace_file
from worker.edges.config import SETTINGS_EPILOG, SettingsParser, add_settings
from worker.programs.settings import parse_settings

PROG = "fraud-worker rules"


def build_parser() -> SettingsParser:
    p = SettingsParser(
        prog=PROG,
        description="Check a rule-set file (conditions, types, lists), or publish it to the models directory as the "
        "serving (RULES) or shadow (RULES_SHADOW) rule set.",
        epilog=SETTINGS_EPILOG + " Exit codes: 0 done, 1 the rule set or a list is refused, 2 bad settings.",
    )
    add_settings(p, ["models_dir", "lists_dir"])
    p.add_argument("action", choices=("check", "publish"), help="check the file, or check and publish it")
    p.add_argument("file", help="the rule set, a TOML file (docs/rules.md)")
    p.add_argument("--shadow", action="store_true", help="publish as the shadow rule set (RULES_SHADOW)")
    p.add_argument("--signing-key", default="", help="sign it with this Ed25519 private key (a PEM file)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parsed = parse_settings(PROG, build_parser(), argv)
    if isinstance(parsed, int):
        return parsed
    args, config = parsed
    from worker.core.rule_lists import read_list
    from worker.core.rules import RULES_FILE, RuleSetError, parse_rule_set
    from worker.core.signing import load_signing_key
    from worker.models.rules import RULES_POINTER, SHADOW_RULES_POINTER, SIGNATURE_FILE, rule_set_dir

    try:
        key = load_signing_key(args.signing_key) if args.signing_key else None
    except ConfigError as exc:
        print(f"{PROG}: bad setting: {exc}", file=sys.stderr)
        return 2
    try:
        data = Path(args.file).read_bytes()
    except OSError as exc:
        print(f"{PROG}: refused: {args.file}: cannot read ({exc.strerror or exc})", file=sys.stderr)
        return 1
    import hashlib

    version = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + hashlib.sha256(data).hexdigest()[:8]
    lists_dir = Path(config.lists_directory)
    try:
        rule_set = parse_rule_set(data, args.file, version)
        sizes = {name: len(read_list(str(lists_dir / file))) for name, file in rule_set.lists.items()}
    except RuleSetError as exc:
        print(f"{PROG}: refused: {exc}", file=sys.stderr)
        return 1
    for r in rule_set.rules:
        how = "compiled" if r.compiled else f"row by row ({r.why})"
        print(f"  {r.action:<8} {r.id}: {r.when}  [{how}]")
    for name, n in sizes.items():
        print(f"  list {name}: {n} values ({lists_dir / rule_set.lists[name]})")
    if args.action == "check":
        print(f"{PROG}: {args.file}: {len(rule_set.rules)} rules, {len(sizes)} lists: ok")
        return 0
    target = rule_set_dir(config.models_dir, version)
    target.mkdir(parents=True, exist_ok=True)
    replace_file(target / RULES_FILE, data)
    if key is not None:
        from worker.core.bundle import sha256_hex

        replace_file(target / SIGNATURE_FILE, key.sign_files({RULES_FILE: sha256_hex(data)}))
    pointer = SHADOW_RULES_POINTER if args.shadow else RULES_POINTER
    replace_file(Path(config.models_dir) / pointer, (version + "\n").encode())
    signed = f", signed with key {key.key_id}" if key is not None else ""
    print(f"{PROG}: published rule set {version} ({len(rule_set.rules)} rules{signed}); {pointer} names it")
    return 0

