"""scripts/compose-secrets: the files of the secured compose stack, checked with openssl and with
the worker's own key loaders. Needs only openssl (as the script does)."""

from __future__ import annotations

import re
import stat
import subprocess
from pathlib import Path

import pytest

from worker.core.signing import load_signing_key, load_trusted_keys

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "compose-secrets"
FILES = {  # name -> mode
    "ca.key": 0o600,
    "ca.pem": 0o644,
    "kafka-keystore.pem": 0o644,
    "admin.password": 0o644,
    "fraud-worker.password": 0o644,
    "kafka_server_jaas.conf": 0o644,
    "admin.properties": 0o644,
    "admin.env": 0o600,
    "model-signing.key": 0o644,
    "model-signing.pub": 0o644,
}


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


def openssl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60)


def contents(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in d.iterdir()}


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("compose") / "secrets"
    done = run("--dir", str(d))
    assert done.returncode == 0, done.stderr
    return d


def test_makes_every_file_in_a_private_directory(made: Path) -> None:
    assert stat.S_IMODE(made.stat().st_mode) == 0o700
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in made.iterdir()} == FILES


def test_broker_certificate_verifies_against_the_ca_for_its_names_only(made: Path, tmp_path: Path) -> None:
    leaf = tmp_path / "broker.pem"
    assert openssl("x509", "-in", str(made / "kafka-keystore.pem"), "-out", str(leaf)).returncode == 0
    for name in ("kafka", "localhost"):
        done = openssl("verify", "-x509_strict", "-CAfile", str(made / "ca.pem"), "-verify_hostname", name, str(leaf))
        assert done.returncode == 0, done.stdout + done.stderr
    assert openssl("verify", "-CAfile", str(made / "ca.pem"), "-verify_hostname", "kafka.evil", str(leaf)).returncode
    text = openssl("x509", "-in", str(leaf), "-noout", "-text").stdout
    assert "TLS Web Server Authentication" in text and "CA:FALSE" in text


def test_key_store_is_a_pkcs8_key_then_the_chain_the_key_belongs_to(made: Path, tmp_path: Path) -> None:
    pem = (made / "kafka-keystore.pem").read_text()
    labels = re.findall(r"-----BEGIN ([A-Z ]+)-----", pem)
    assert labels == ["PRIVATE KEY", "CERTIFICATE", "CERTIFICATE"]  # PKCS#8, unencrypted: what Kafka reads
    assert pem.rstrip().endswith((made / "ca.pem").read_text().rstrip())
    (tmp_path / "ks.pem").write_text(pem)
    from_key = openssl("pkey", "-in", str(tmp_path / "ks.pem"), "-pubout").stdout
    from_cert = openssl("x509", "-in", str(tmp_path / "ks.pem"), "-noout", "-pubkey").stdout
    assert from_key and from_key == from_cert


def test_ed25519_pair_signs_what_the_worker_then_trusts(made: Path) -> None:
    key = load_signing_key(str(made / "model-signing.key"))
    trusted = load_trusted_keys(str(made / "model-signing.pub"))
    assert trusted.ids == (key.key_id,)
    doc = key.sign(b"manifest", b"model")
    assert trusted.verify("b1", b"manifest", b"model", doc) == key.key_id


def test_passwords_are_random_and_shared_by_jaas_and_admin_properties(made: Path) -> None:
    admin = (made / "admin.password").read_text()
    worker = (made / "fraud-worker.password").read_text()
    assert re.fullmatch(r"[0-9a-f]{48}", admin) and re.fullmatch(r"[0-9a-f]{48}", worker) and admin != worker
    jaas = (made / "kafka_server_jaas.conf").read_text()
    assert f'user_admin="{admin}"' in jaas and f'user_fraud-worker="{worker}"' in jaas
    assert f'username="admin"\n    password="{admin}"' in jaas
    assert f'password="{admin}";' in (made / "admin.properties").read_text()
    env = dict(line.split("=", 1) for line in (made / "admin.env").read_text().splitlines())
    assert env["FRAUD_KAFKA_SASL_PLAIN_PASSWORD_FILE"] == str(made / "admin.password")
    assert env["FRAUD_KAFKA_SSL_CAFILE"] == str(made / "ca.pem")


def test_a_second_run_changes_nothing_and_a_new_password_rewrites_what_holds_it(tmp_path: Path) -> None:
    d = tmp_path / "s"
    assert run("--dir", str(d)).returncode == 0
    first = contents(d)
    assert run("--dir", str(d)).returncode == 0
    assert contents(d) == first
    (d / "fraud-worker.password").unlink()
    assert run("--dir", str(d)).returncode == 0
    changed = {name for name, data in contents(d).items() if first[name] != data}
    assert changed == {"fraud-worker.password", "kafka_server_jaas.conf"}
    (d / "ca.pem").unlink()
    assert run("--dir", str(d)).returncode == 0
    second = contents(d)
    assert {name for name, data in second.items() if first[name] != data} >= {"ca.key", "ca.pem", "kafka-keystore.pem"}
    assert run("--dir", str(d), "--force").returncode == 0
    assert all(data != second[name] for name, data in contents(d).items() if name != "admin.env")


def test_help_and_one_line_errors(tmp_path: Path) -> None:
    helped = run("--help")
    assert helped.returncode == 0 and "--dir DIR" in helped.stdout and "--force" in helped.stdout
    for args in (["--bogus"], ["--dir"]):
        done = run(*args)
        assert done.returncode == 2 and len(done.stderr.splitlines()) == 1
    (tmp_path / "file").write_text("")
    done = run("--dir", str(tmp_path / "file"))
    assert done.returncode == 1 and done.stderr.startswith("compose-secrets: ") and len(done.stderr.splitlines()) == 1
    d = tmp_path / "s"
    assert run("--dir", str(d)).returncode == 0
    (d / "admin.password").write_text('pass"word')
    done = run("--dir", str(d))
    assert done.returncode == 1 and "admin.password" in done.stderr and len(done.stderr.splitlines()) == 1


def test_refuses_a_directory_it_did_not_make_and_leaves_it_as_it_was(tmp_path: Path) -> None:
    """--dir . or --dir ~ must not chmod 700 (or fill) a directory that holds other things."""
    foreign = tmp_path / "project"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    foreign.chmod(0o755)
    done = run("--dir", str(foreign))
    assert done.returncode == 1 and len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith("compose-secrets: ") and "notes.txt" in done.stderr
    assert stat.S_IMODE(foreign.stat().st_mode) == 0o755
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    # A symbolic link to a directory is refused too, whatever it points at; so is a file.
    made = tmp_path / "made"
    assert run("--dir", str(made)).returncode == 0
    (tmp_path / "link").symlink_to(made)
    done = run("--dir", str(tmp_path / "link"))
    assert done.returncode == 1 and "symbolic link" in done.stderr and len(done.stderr.splitlines()) == 1
    # A directory an earlier run made (its files only) is used again; so is an empty one of this user's.
    assert run("--dir", str(made)).returncode == 0
    empty = tmp_path / "empty"
    empty.mkdir(mode=0o755)
    assert run("--dir", str(empty)).returncode == 0
    assert stat.S_IMODE(empty.stat().st_mode) == 0o700 and {p.name for p in empty.iterdir()} == set(FILES)
    # One stray file among its own is enough to refuse.
    (made / "id_rsa").write_text("not ours")
    made.chmod(0o750)
    done = run("--dir", str(made))
    assert done.returncode == 1 and "id_rsa" in done.stderr
    assert stat.S_IMODE(made.stat().st_mode) == 0o750


def test_a_new_directory_is_private_from_the_start(tmp_path: Path) -> None:
    d = tmp_path / "a" / "b" / "secrets"
    assert run("--dir", str(d)).returncode == 0
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
