"""fraud-train --signing-key: the bundle it writes is signed, the promotion gate and a copy keep the
signature valid, and a key file it cannot use is refused in one line before any training."""

from __future__ import annotations

import shutil

import pytest

from tests.support.keys import make_keys
from tests.unit.training.conftest import train
from worker.core.bundle import SIGNATURE_FILE, list_versions, load_bundle, read_current
from worker.core.errors import SignatureError
from worker.core.scoring import load_scorer


def test_a_signed_training_run_writes_a_bundle_the_worker_accepts(tmp_path, capsys):
    keys = make_keys(tmp_path / "keys", "trainer")
    models = tmp_path / "models"
    assert train(models, "--signing-key", str(keys.private)) == 0
    out = capsys.readouterr().out
    assert f"key {keys.key_id}" in out  # the summary's "signed" row
    version = read_current(models)
    assert (models / version / SIGNATURE_FILE).is_file()
    assert load_scorer(str(models), trusted_keys=keys.trusted()).bundle.signed_by == keys.key_id
    with pytest.raises(SignatureError, match="not a trusted key"):
        load_bundle(models, version, make_keys(tmp_path / "keys", "other").trusted())

    # The gate (a second, signed run against the same directory) and a copy of the whole directory
    # leave every bundle's signature valid: neither rewrites a bundle's files.
    assert train(models, "--signing-key", str(keys.private), "--seed", "8", "--force") == 0
    copy = tmp_path / "copy"
    shutil.copytree(models, copy)
    versions = list_versions(copy)
    assert len(versions) == 2 and read_current(copy) == versions[-1] != version
    for v in versions:
        assert load_bundle(copy, v, keys.trusted()).signed_by == keys.key_id


def test_an_unsigned_run_writes_no_signature(trained):
    assert not (trained / read_current(trained) / SIGNATURE_FILE).exists()


@pytest.mark.parametrize("case", ["missing", "garbage", "public key"])
def test_a_bad_signing_key_is_refused_in_one_line_before_training(tmp_path, capsys, case):
    keys = make_keys(tmp_path / "keys")
    path = {"missing": tmp_path / "absent.pem", "garbage": tmp_path / "garbage.pem", "public key": keys.public}[case]
    if case == "garbage":
        path.write_text("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    models = tmp_path / "models"
    assert train(models, "--signing-key", str(path)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fraud-train: --signing-key: ") and str(path) in err[0], err
    assert not models.exists()
