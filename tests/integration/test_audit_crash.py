"""A writer process SIGKILLed during heavy concurrent appends loses no acknowledged entry."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from ibex.auditlog import AuditLog
from ibex.merkle import root_from_leaf_hashes
from ibex.store import generate_db_key_file, load_db_key
from tests.unit.test_auditlog import ORIGIN

WRITER = textwrap.dedent(
    """
    import sys, threading
    from pathlib import Path
    from nacl.signing import SigningKey
    from ibex.auditlog import AuditLog
    from ibex.store import load_db_key
    from tests.unit.test_auditlog import ORIGIN, sample_entry

    db, key = Path(sys.argv[1]), load_db_key(Path(sys.argv[2]))
    log = AuditLog(db, key, origin=ORIGIN, signing_key=SigningKey(b"\\x01" * 32), create=True,
                   checkpoint_every=200)
    lock = threading.Lock()

    def writer(w):
        i = 0
        while True:
            r = log.append(sample_entry(w * 1_000_000 + i))
            i += 1
            with lock:
                sys.stdout.write(f"{r.index} {r.leaf_hash.hex()}\\n")
                sys.stdout.flush()

    for w in range(24):
        threading.Thread(target=writer, args=(w,), daemon=True).start()
    threading.Event().wait()
    """
)


@pytest.mark.slow
def test_sigkill_during_appends_keeps_every_acknowledged_entry(tmp_path: Path) -> None:
    key_file = generate_db_key_file(tmp_path / "audit.key")
    db = tmp_path / "audit.db"
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db), str(key_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=root,
        env=env,
    )
    assert proc.stdout is not None
    acknowledged: dict[int, str] = {}
    deadline = time.monotonic() + 60
    while len(acknowledged) < 3000 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        index, digest = line.decode().split()
        acknowledged[int(index)] = digest
    proc.send_signal(signal.SIGKILL)
    rest, err = proc.communicate()
    for line in rest.decode().splitlines():  # acknowledged before the kill landed
        if line.count(" ") == 1:
            index, digest = line.split()
            acknowledged[int(index)] = digest
    assert len(acknowledged) >= 3000, err.decode()[-2000:]

    with AuditLog(
        db, load_db_key(key_file), origin=ORIGIN, signing_key=SigningKey(b"\x01" * 32)
    ) as log:
        size = log.size()
        assert size >= max(acknowledged) + 1
        stored = {e.index: e.leaf_hash.hex() for e in log.entries(0, size)}
        assert all(stored.get(i) == d for i, d in acknowledged.items())
        assert log.root() == root_from_leaf_hashes([bytes.fromhex(stored[i]) for i in range(size)])
        report = log.verify()
        assert report.ok, report.summary()
        assert report.checkpoints >= 1
        log.append({"v": 1, "kind": "witness", "time": "2027-01-01T00:00:00Z", "retention_days": 1})
        assert log.size() == size + 1
