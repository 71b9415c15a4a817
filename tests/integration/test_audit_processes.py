"""Several processes append to one audit log file at once and every acknowledged entry survives.

Each process runs its own group commit (leader/follower over its threads); they meet only in
SQLite's write lock, so every append must read the size and the tree's frontier under that lock
rather than trust what its own process wrote last.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from ibex.auditentry import to_leaf
from ibex.auditlog import AuditLog
from ibex.merkle import leaf_hash, root_from_leaf_hashes
from ibex.store import generate_db_key_file, load_db_key
from tests.unit.test_auditlog import ORIGIN, sample_entry

PROCESSES, THREADS, APPENDS = 3, 6, 60

WRITER = textwrap.dedent(
    """
    import sys, threading
    from pathlib import Path
    from nacl.signing import SigningKey
    from ibex.auditlog import AuditLog
    from ibex.store import load_db_key
    from tests.unit.test_auditlog import ORIGIN, sample_entry

    db, key, p = Path(sys.argv[1]), load_db_key(Path(sys.argv[2])), int(sys.argv[3])
    threads, appends = int(sys.argv[4]), int(sys.argv[5])
    log = AuditLog(db, key, origin=ORIGIN, signing_key=SigningKey(b"\\x01" * 32),
                   checkpoint_every=50)
    lock = threading.Lock()

    def writer(t):
        for i in range(appends):
            n = (p * threads + t) * appends + i
            r = log.append(sample_entry(n))
            with lock:
                sys.stdout.write(f"{n} {r.index} {r.leaf_hash.hex()}\\n")

    workers = [threading.Thread(target=writer, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    log.close()
    """
)


@pytest.mark.slow
def test_processes_sharing_one_log_lose_no_acknowledged_entry(tmp_path: Path) -> None:
    key_file = generate_db_key_file(tmp_path / "audit.key")
    db = tmp_path / "audit.db"
    key = load_db_key(key_file)
    AuditLog(db, key, origin=ORIGIN, create=True).close()  # created once, before the race
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    args = [sys.executable, "-c", WRITER, str(db), str(key_file)]
    procs = [
        subprocess.Popen(
            [*args, str(p), str(THREADS), str(APPENDS)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=root,
            env=env,
        )
        for p in range(PROCESSES)
    ]
    acknowledged: dict[int, tuple[int, str]] = {}  # index -> (entry number, leaf hash)
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err.decode()[-2000:]
        for line in out.decode().splitlines():
            n, index, digest = line.split()
            assert int(index) not in acknowledged, f"index {index} was acknowledged twice"
            acknowledged[int(index)] = (int(n), digest)

    total = PROCESSES * THREADS * APPENDS
    assert sorted(acknowledged) == list(range(total))
    with AuditLog(db, key, origin=ORIGIN, signing_key=SigningKey(b"\x01" * 32)) as log:
        assert log.size() == total
        stored = log.entries(0, total)
        for e in stored:
            n, digest = acknowledged[e.index]
            assert e.leaf == to_leaf(sample_entry(n))[0]
            assert e.leaf_hash.hex() == digest == leaf_hash(e.leaf).hex()
        assert log.root() == root_from_leaf_hashes([e.leaf_hash for e in stored])
        report = log.verify()
        assert report.ok, report.summary()
        assert report.checkpoints >= 1
