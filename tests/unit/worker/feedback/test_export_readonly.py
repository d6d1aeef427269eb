"""``fraud-feedback export --state-dir`` reads the stores and never writes to them or beside them: on a
read-only mount, on files and a directory made read-only (bytes, times and the listing unchanged),
beside a live writer, and from a crash's leftover WAL; an unreadable store is one line naming it."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.broker import REPO
from worker.feedback.records import Label, Score
from worker.feedback.store import DAY_MS, Store
from worker.programs.fraud_feedback import main

NOW = 1_800_000_000_000
WINDOW = 120 * DAY_MS


def fill(state: Path, n: int = 40, keep_open: bool = False) -> list[Store]:
    stores = []
    for p in range(2):
        store = Store(state / f"partition-{p}.sqlite", WINDOW)
        txns = [f"tx-{p}-{i}" for i in range(n)]
        features = (("f0", "f1"), (1.5, -2.0))
        now = store._clock()
        store.apply([Score(t, "v1", 0.3, 0.5, now - 1000 - i, features) for i, t in enumerate(txns)],
                    [Label(t, i % 4 == 0, now, "test") for i, t in enumerate(txns)], {"scores": n})  # fmt: skip
        stores.append(store)
    if not keep_open:
        for store in stores:
            store.close()
    return stores


def listing(state: Path) -> dict[str, tuple]:
    return {p.name: (p.stat().st_mtime_ns, p.stat().st_mode, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(state.iterdir())}  # fmt: skip


def rows(out: Path) -> list[str]:
    return gzip.decompress(out.read_bytes()).decode().splitlines()


def test_export_reads_read_only_files_and_leaves_them_as_they_were(tmp_path, capsys):
    state = tmp_path / "state"
    fill(state)
    for p in state.iterdir():
        p.chmod(0o444)
    state.chmod(0o555)
    try:
        before = listing(state)
        assert main(["export", "--state-dir", str(state), "--out", str(tmp_path / "x.csv.gz")]) == 0
        assert listing(state) == before, "nothing written to the stores, nothing created beside them"
    finally:
        state.chmod(0o755)
    assert len(rows(tmp_path / "x.csv.gz")) == 81
    assert "80 labelled examples (20 fraud)" in capsys.readouterr().out


def _can_mount_read_only(path: Path) -> bool:
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount --bind {path} {path} && "
                            f"mount -o remount,bind,ro {path}"], capture_output=True)  # fmt: skip
    return probe.returncode == 0


def test_export_on_a_read_only_mount(tmp_path):
    """A mount the kernel refuses writes to (the tests run as root, which file modes do not stop)."""
    state = tmp_path / "state"
    fill(state)
    if shutil.which("unshare") is None or not _can_mount_read_only(state):
        pytest.skip("cannot make a read-only bind mount here (needs unshare and CAP_SYS_ADMIN)")
    out = tmp_path / "x.csv.gz"
    script = (
        f"mount --bind {state} {state} && mount -o remount,bind,ro {state} && touch {state}/probe 2>/dev/null "
        f"&& exit 9; exec {sys.executable} -m worker.programs.fraud_feedback export --state-dir {state} --out {out}"
    )
    done = subprocess.run(["unshare", "-m", "sh", "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert len(rows(out)) == 81


def test_export_beside_a_live_writer_and_from_a_crash_wal(tmp_path):
    state = tmp_path / "state"
    stores = fill(state, keep_open=True)  # live: -wal and -shm beside each store
    try:
        assert sorted(p.name for p in state.iterdir())[:3] == ["partition-0.sqlite", "partition-0.sqlite-shm",
                                                               "partition-0.sqlite-wal"]  # fmt: skip
        crash = tmp_path / "crash"
        crash.mkdir()
        for name in ("partition-0.sqlite", "partition-0.sqlite-wal", "partition-1.sqlite", "partition-1.sqlite-wal"):
            shutil.copyfile(state / name, crash / name)  # a crash's leftovers: the WAL, no index
        data = {n: v[2] for n, v in listing(state).items() if not n.endswith("-shm")}
        assert main(["export", "--state-dir", str(state), "--out", str(tmp_path / "live.csv.gz")]) == 0
        assert {n: v[2] for n, v in listing(state).items() if not n.endswith("-shm")} == data
        before = listing(crash)
        assert main(["export", "--state-dir", str(crash), "--out", str(tmp_path / "crash.csv.gz")]) == 0
        assert listing(crash) == before
    finally:
        for store in stores:
            store.close()
    assert rows(tmp_path / "live.csv.gz") == rows(tmp_path / "crash.csv.gz")
    assert len(rows(tmp_path / "live.csv.gz")) == 81


@pytest.mark.parametrize("damage", ["garbage", "directory", "not_a_store"])
def test_an_unreadable_store_is_one_line_naming_it(tmp_path, capsys, damage):
    state = tmp_path / "state"
    fill(state)
    bad = state / "partition-1.sqlite"
    if damage == "garbage":
        bad.write_bytes(os.urandom(8192))
    elif damage == "directory":
        bad.unlink()
        bad.mkdir()
    else:
        import sqlite3

        bad.unlink()
        sqlite3.connect(bad).execute("CREATE TABLE other (x)").connection.close()
    assert main(["export", "--state-dir", str(state), "--out", str(tmp_path / "x.csv")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(bad) in err and "Traceback" not in err, err


def test_export_needs_exactly_one_source(tmp_path, capsys):
    assert main(["export", "--out", str(tmp_path / "x.csv")]) == 2
    assert main(["export", "--from-topics", "--state-dir", str(tmp_path), "--out", str(tmp_path / "x.csv")]) == 2
    assert "not allowed with" in capsys.readouterr().err
    assert main(["export", "--state-dir", str(tmp_path / "absent"), "--out", str(tmp_path / "x.csv")]) == 2


def test_moved_aside_stores_are_not_exported(tmp_path):
    state = tmp_path / "state"
    fill(state)
    shutil.copyfile(state / "partition-0.sqlite", state / "partition-0.sqlite.corrupt-20261207T000000Z")
    (state / "partition-x.sqlite").write_bytes(b"")
    assert main(["export", "--state-dir", str(state), "--out", str(tmp_path / "x.csv.gz")]) == 0
    assert len(rows(tmp_path / "x.csv.gz")) == 81
    assert stat.S_ISREG((tmp_path / "x.csv.gz").stat().st_mode)
