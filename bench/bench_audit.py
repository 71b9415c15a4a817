"""Audit log throughput, latency and proof cost. Prints figures and ratios; not a test.

* Durable appends/s at 1, 8 and 32 writer threads with synchronous=FULL: group commit
  (``AuditLog.append``: each writer validates its entry and queues it; whoever finds no commit in
  progress leads, writing everything queued in one transaction and one flush) versus the
  baseline of one transaction and one flush per append (each writer validates its entry and
  calls the store directly, the way a naive log would). Median of 3 runs. The schema registry is
  built before the first timed run, so that no run pays for it.
* Single-append latency (one writer, p50/p99).
* Proof generation at 1,000,000 entries. The tree is built by the bulk path: leaf bytes are
  made from one canonical entry with a varying query id, and handed to the store's
  ``append_leaves`` in batches of 50,000 (one transaction each) -- the same insert code the
  group commit uses, minus per-entry schema validation.

``bench_audit.py [N]`` builds the proof tree with N entries (default 1,000,000);
``--appends-only`` prints the appends/s table alone.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from nacl.signing import SigningKey

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ibex.auditentry import new_entry, to_leaf
from ibex.auditlog import AuditLog
from ibex.auditstore import SQLCipherAuditStore
from ibex.canonical import canonical_json
from ibex.merkle import leaf_hash, verify_consistency, verify_inclusion
from ibex.store import generate_db_key_file, load_db_key

ORIGIN = "ibex.example/bench"
T0 = 1_800_000_000.0


def entry(i: int) -> dict[str, object]:
    return new_entry(
        "decision",
        retention_days=365,
        at=T0,
        query_id=f"123e4567-e89b-12d3-a456-{i % 10**12:012d}",
        requester="CA-CBSA",
        officer="psn-7f3a",
        purpose="border_screening",
        legal_basis="ca.irpa.s8",
        subject_type="person",
        criteria_fields=["surname", "birth_date"],
        target="US-CBP",
        decision={"allow": True, "mode": "hit_no_hit", "fields": ["surname"], "withheld": [],
                  "rule_ids": ["agreement.allow"], "policy_digest": "sha256:" + "ab" * 32},
    )  # fmt: skip


def new_log(root: Path) -> AuditLog:
    root.mkdir(parents=True)
    key = load_db_key(generate_db_key_file(root / "k"))
    return AuditLog(root / "a.db", key, origin=ORIGIN, signing_key=SigningKey(b"\x01" * 32),
                    create=True, checkpoint_every=10**9, checkpoint_seconds=3600)  # fmt: skip


def run_threads(writers: int, per_writer: int, fn: object) -> float:
    """Appends per second for ``writers`` threads each calling ``fn(w, i)`` per_writer times."""
    barrier = threading.Barrier(writers + 1)

    def work(w: int) -> None:
        barrier.wait()
        for i in range(per_writer):
            fn(w, i)  # type: ignore[operator]

    threads = [threading.Thread(target=work, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    return writers * per_writer / (time.perf_counter() - start)


def throughput(tmp: Path, writers: int, total: int, grouped: bool, run: int) -> float:
    log = new_log(tmp / f"{'g' if grouped else 'b'}{writers}-{run}")
    per = max(1, total // writers)
    try:
        if grouped:
            return run_threads(writers, per, lambda w, i: log.append(entry(w * per + i)))
        store = log._store
        return run_threads(
            writers, per, lambda w, i: store.append_leaves([to_leaf(entry(w * per + i))])
        )
    finally:
        log.close()


def latency(tmp: Path) -> tuple[float, float]:
    log = new_log(tmp / "lat")
    try:
        for i in range(50):
            log.append(entry(i))  # warm up
        samples = []
        for i in range(1000):
            start = time.perf_counter()
            log.append(entry(i))
            samples.append(time.perf_counter() - start)
    finally:
        log.close()
    samples.sort()
    return samples[len(samples) // 2] * 1e3, samples[int(len(samples) * 0.99)] * 1e3


def million(tmp: Path, n: int) -> None:
    root = tmp / "million"
    root.mkdir()
    key = load_db_key(generate_db_key_file(root / "k"))
    store = SQLCipherAuditStore(root / "a.db", key, create=True)
    template = canonical_json(entry(0))
    marker = b"a456-000000000000"
    assert marker in template
    start = time.perf_counter()
    batch = 50_000
    for base in range(0, n, batch):
        leaves = [
            (template.replace(marker, b"a456-%012d" % i), 0)
            for i in range(base, min(n, base + batch))
        ]
        store.append_leaves(leaves)
    build = time.perf_counter() - start
    store.close()
    log = AuditLog(root / "a.db", key, origin=ORIGIN, verify_integrity=False)
    try:
        size = log.size()
        root_hash = log.root(size)
        rng = random.Random(7)
        inc, con = [], []
        for _ in range(2000):
            i = rng.randrange(size)
            t0 = time.perf_counter()
            proof = log.inclusion_proof(i, size)
            inc.append(time.perf_counter() - t0)
            leaf = template.replace(marker, b"a456-%012d" % i)
            verify_inclusion(leaf_hash(leaf), i, size, proof, root_hash)
            old = rng.randrange(1, size)
            t0 = time.perf_counter()
            cproof = log.consistency_proof(old, size)
            con.append(time.perf_counter() - t0)
            if len(con) <= 20:
                verify_consistency(old, size, log.root(old), root_hash, cproof)
    finally:
        log.close()
    inc.sort()
    con.sort()
    print(f"\nproofs at {size:,} entries (tree built by bulk append_leaves in {build:.1f} s, "
          f"{size / build:,.0f} leaves/s)")  # fmt: skip
    print(f"  inclusion proof   p50 {inc[1000] * 1e3:.3f} ms   p99 {inc[1980] * 1e3:.3f} ms")
    print(f"  consistency proof p50 {con[1000] * 1e3:.3f} ms   p99 {con[1980] * 1e3:.3f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("n", nargs="?", type=int, default=1_000_000, help="entries for proofs")
    parser.add_argument("--appends-only", action="store_true", help="only the appends/s table")
    args = parser.parse_args()
    to_leaf(entry(0))  # builds the schema registry (~0.3 s) outside the timed runs
    with tempfile.TemporaryDirectory(prefix="ibex-bench-audit-") as d:
        tmp = Path(d)
        print("durable appends/s (synchronous=FULL, SQLCipher, median of 3 runs)")
        print(f"  {'writers':>7}  {'group commit':>12}  {'txn per append':>14}  {'ratio':>6}")
        for writers, total in ((1, 2000), (8, 4000), (32, 8000)):
            grouped = statistics.median(throughput(tmp, writers, total, True, r) for r in range(3))
            base = statistics.median(
                throughput(tmp, writers, total // 4, False, r) for r in range(3)
            )
            print(f"  {writers:>7}  {grouped:>12,.0f}  {base:>14,.0f}  {grouped / base:>5.1f}x")
        if args.appends_only:
            return
        p50, p99 = latency(tmp)
        print(f"\nsingle-append latency (1 writer): p50 {p50:.2f} ms   p99 {p99:.2f} ms")
        million(tmp, args.n)


if __name__ == "__main__":
    main()
