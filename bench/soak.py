"""Load soak: a mixed workload at a fixed rate for a fixed time against a whole local federation.

The broker (2 gunicorn workers) and three connectors (1 worker each: CA-CBSA, CA-RCMP, US-CBP)
run as real processes on 127.0.0.1, with synthetic records from ``ibex.demodata``. Queries enter
through the agencies' gateways as their own systems would send them, on an open-loop schedule
(query i is due at i / rate seconds, whether or not earlier ones have finished), in a fixed mix:

- ``allowed``   CA-CBSA screens a traveller US-CBP holds: answered, full record, minimised;
- ``denied``    the same for a criminal investigation: denied by the policy;
- ``hit``       CA-RCMP asks US-CBP hit/no-hit about a person it holds: a hit, no data;
- ``miss``      CA-CBSA screens someone nobody holds: answered, no record;
- ``follow-up`` CA-RCMP follows up a hit with its reference: the full record.

It reports the error rate (a wrong outcome, a refusal, an HTTP error or a late answer is an
error), p50/p99 latency per kind (from the time the query was due, so queueing counts), the RSS
of every gunicorn process at the start and the end, and the broker's audit entries written
against those expected (per query: intake, one decision per target, one disclosure or failure per
allowed target, the answer). Exit status 1 when any query failed or the audit count differs.

Bounded: ``rate * duration`` queries, a deadline of ``duration + 60`` s for the last answer; all
traffic on loopback. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_all
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ibex import demodata
from ibex.demo_scenario import SUSPECT_QUERY, TRAVELLER_QUERY
from ibex.demofed import DEMO_MEMBERS, LocalFederation

MEMBERS = ("CA-CBSA", "CA-RCMP", "US-CBP")
PROVIDER = "US-CBP"
MIX = {"allowed": 30, "denied": 15, "hit": 20, "miss": 20, "follow-up": 15}
GRACE = 60.0  # seconds after the last due time within which every answer must be in
# Broker audit entries per query with one target: intake, decision, [disclosure,] answer.
AUDIT_ENTRIES = {"allowed": 4, "denied": 3, "hit": 4, "miss": 4, "follow-up": 4}


@dataclass
class Outcome:
    kind: str
    latency_ms: float
    ok: bool
    error: str = ""


@dataclass
class Tally:
    outcomes: list[Outcome] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, outcome: Outcome) -> None:
        with self.lock:
            self.outcomes.append(outcome)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


# --- processes and their memory -------------------------------------------------------------


def _children(pid: int) -> list[int]:
    out: list[int] = []
    task_dir = Path(f"/proc/{pid}/task")
    try:
        for task in task_dir.iterdir():
            text = (task / "children").read_text()
            out.extend(int(p) for p in text.split())
    except OSError:
        pass
    return sorted(set(out))


def _rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_snapshot(fed: LocalFederation) -> dict[str, dict[int, tuple[str, int]]]:
    """VmRSS (KiB) of each node's gunicorn master and its workers: node -> pid -> (role, KiB)."""
    snap: dict[str, dict[int, tuple[str, int]]] = {}
    for name, node in fed.nodes.items():
        if node.process is None:
            continue
        master = node.process.pid
        roles = {master: "master", **dict.fromkeys(_children(master), "worker")}
        snap[name] = {p: (role, rss) for p, role in roles.items() if (rss := _rss_kib(p))}
    return snap


# --- the broker's audit log -------------------------------------------------------------------

_ENTRIES_RE = re.compile(r'^ibex_audit_entries\{log="audit"\}\s+([0-9.e+]+)$', re.MULTILINE)


def audit_entries(client: httpx.Client, broker_url: str) -> int:
    """The number of entries in the broker's audit log (read from the store at scrape time)."""
    text = client.get(broker_url + "/metrics").text
    found = _ENTRIES_RE.search(text)
    if found is None:
        raise RuntimeError('the broker\'s /metrics has no ibex_audit_entries{log="audit"}')
    return int(float(found.group(1)))


# --- the workload -------------------------------------------------------------------------------


class Workload:
    def __init__(self, fed: LocalFederation, people: list[dict[str, Any]], seed: int) -> None:
        self.fed = fed
        self.people = people
        self.rng = random.Random(seed)  # only the scheduler thread draws from it
        self.references: list[str] = []
        self.ref_lock = threading.Lock()
        self.tokens = {
            m: (fed.root / m / "keys" / "gateway.token").read_text().strip() for m in MEMBERS
        }
        self.client = httpx.Client(
            trust_env=False, timeout=30.0, limits=httpx.Limits(max_connections=128)
        )

    def _ask(self, member: str, request: dict[str, Any]) -> dict[str, Any]:
        resp = self.client.post(
            self.fed.nodes[member].url + "/v1/gateway/queries",
            json=request,
            headers={"Authorization": f"Bearer {self.tokens[member]}"},
        )
        if resp.status_code != 200:
            raise RuntimeError(f"HTTP {resp.status_code}: {resp.text[:200]}")
        answer: dict[str, Any] = resp.json()
        if "broker_refusal" in answer:
            raise RuntimeError(f"refused: {answer['broker_refusal']}")
        results = {r["target"]: r for r in answer.get("results", [])}
        if set(results) != {PROVIDER}:
            raise RuntimeError(f"results for {sorted(results)}")
        return results[PROVIDER]

    @staticmethod
    def _criteria(person: dict[str, Any]) -> dict[str, Any]:
        return {
            "name.surname": person["name"]["surname"],
            "name.given_names": person["name"]["given_names"],
            "date_of_birth": person["date_of_birth"],
        }

    def plan(self, kind: str) -> Callable[[], None]:
        """The query of ``kind`` to send (drawn now, in schedule order, so a run is repeatable)."""
        person = self.rng.choice(self.people)
        nobody = {
            "name.surname": f"NOSUCHNAME{self.rng.randrange(10**9)}",
            "name.given_names": "NOBODY",
            "date_of_birth": "1901-01-01",
        }
        screening = {**TRAVELLER_QUERY, "purpose": "border_screening", "targets": [PROVIDER]}
        if kind == "allowed":
            return lambda: self.allowed({**screening, "criteria": self._criteria(person)})
        if kind == "denied":
            request = {
                **screening,
                "purpose": "criminal_investigation",
                "case_reference": "CBSA-2026-0042",
                "seriousness": "serious",
                "criteria": self._criteria(person),
            }
            return lambda: self.denied(request)
        if kind == "miss":
            return lambda: self.miss({**screening, "criteria": nobody})
        investigation = {**SUSPECT_QUERY, "targets": [PROVIDER]}
        if kind == "hit":
            request = {**investigation, "mode": "hit_no_hit", "criteria": self._criteria(person)}
            return lambda: self.hit(request)
        pick = self.rng.random()
        return lambda: self.follow_up(investigation, pick)

    def allowed(self, request: dict[str, Any]) -> None:
        r = self._ask("CA-CBSA", request)
        if r["status"] != "answered" or r.get("verification") != "verified":
            raise RuntimeError(f"allowed: {r['status']} / {r.get('verification')}")
        if not r.get("records"):
            raise RuntimeError("allowed: no record for a person the provider holds")
        fields = set((r.get("decision") or {}).get("fields", []))
        if any(set(rec["record"]) - fields for rec in r["records"]):
            raise RuntimeError("allowed: a record holds fields beyond the decision")

    def denied(self, request: dict[str, Any]) -> None:
        r = self._ask("CA-CBSA", request)
        if r["status"] != "denied" or r.get("records") or r.get("hits"):
            raise RuntimeError(f"denied: {r['status']}")

    def miss(self, request: dict[str, Any]) -> None:
        r = self._ask("CA-CBSA", request)
        if r["status"] != "answered" or r.get("verification") != "verified":
            raise RuntimeError(f"miss: {r['status']} / {r.get('verification')}")
        if r.get("records") or r.get("hits"):
            raise RuntimeError("miss: something matched a person nobody holds")

    def hit(self, request: dict[str, Any]) -> None:
        r = self._ask("CA-RCMP", request)
        if r["status"] != "answered" or r.get("records") or not r.get("hits"):
            raise RuntimeError(f"hit: {r['status']}, {len(r.get('hits') or [])} hit(s)")
        with self.ref_lock:
            self.references.append(r["hits"][0]["reference"])
            del self.references[:-256]  # a bounded pool of recent references

    def follow_up(self, investigation: dict[str, Any], pick: float) -> None:
        with self.ref_lock:
            reference = self.references[int(pick * len(self.references))]
        follow = {"reference": reference, "target": PROVIDER, "officer_confirmed": True}
        r = self._ask("CA-RCMP", {**investigation, "follow_up": follow})
        if r["status"] != "answered" or r.get("verification") != "verified" or not r.get("records"):
            raise RuntimeError(f"follow-up: {r['status']}, {len(r.get('records') or [])} record(s)")


def run(workload: Workload, rate: float, duration: float, tally: Tally) -> int:
    """Send ``rate * duration`` queries on an open-loop schedule; return how many were sent."""
    total = int(rate * duration)
    weights = list(MIX.values())
    pool = ThreadPoolExecutor(max_workers=64)
    futures: list[Future[None]] = []
    start = time.perf_counter()

    def one(kind: str, due: float, call: Callable[[], None]) -> None:
        try:
            call()
            ok, error = True, ""
        except Exception as exc:
            ok, error = False, f"{type(exc).__name__}: {exc}"
        tally.add(Outcome(kind, (time.perf_counter() - due) * 1000, ok, error))

    for i in range(total):
        kind = workload.rng.choices(list(MIX), weights)[0]
        call = workload.plan(kind)
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        futures.append(pool.submit(one, kind, due, call))
    _, late = wait_all(futures, timeout=max(0.0, start + duration + GRACE - time.perf_counter()))
    for f in late:
        f.cancel()
    pool.shutdown(wait=False, cancel_futures=True)
    missing = total - len(tally.outcomes)
    for _ in range(missing):  # still running past the deadline: each is an error
        tally.add(Outcome("late", float("nan"), False, "no answer within the deadline"))
    return total


# --- set-up and report -----------------------------------------------------------------------


def seed(fed: LocalFederation, records: int) -> list[dict[str, Any]]:
    """Seed every member's store; return the people US-CBP holds with a full date of birth."""
    people: list[dict[str, Any]] = []
    for member in MEMBERS:
        batches = list(demodata.generate(member, records))
        fed.seed_batches(member, batches)
        if member == PROVIDER:
            people = [
                r
                for entity, batch in batches
                if entity == "person"
                for r in batch
                if len(str(r.get("date_of_birth", ""))) == 10 and "given_names" in r["name"]
            ]
    if not people:
        raise RuntimeError(f"{PROVIDER} holds no person with a full name and date of birth")
    return people


def report(
    tally: Tally,
    sent: int,
    wall: float,
    rss: tuple[dict[str, dict[int, tuple[str, int]]], dict[str, dict[int, tuple[str, int]]]],
    audit: tuple[int, int],
) -> dict[str, Any]:
    by_kind: dict[str, list[Outcome]] = defaultdict(list)
    for o in tally.outcomes:
        by_kind[o.kind].append(o)
    errors = [o for o in tally.outcomes if not o.ok]
    print(
        f"{sent} queries in {wall:.1f} s ({sent / wall:.1f}/s offered), "
        f"errors {len(errors)} ({100 * len(errors) / max(sent, 1):.2f} %)"
    )
    print(f"{'kind':<10} {'count':>6} {'errors':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    kinds: dict[str, Any] = {}
    for kind in [*MIX, "late"]:
        items = by_kind.get(kind, [])
        if not items:
            continue
        lat = [o.latency_ms for o in items if o.ok]
        errs = sum(not o.ok for o in items)
        p50, p99 = percentile(lat, 0.5), percentile(lat, 0.99)
        top = max(lat) if lat else float("nan")
        print(f"{kind:<10} {len(items):>6} {errs:>6} {p50:>8.1f} {p99:>8.1f} {top:>8.1f}")
        kinds[kind] = {"count": len(items), "errors": errs, "p50_ms": p50, "p99_ms": p99}
    all_ok = [o.latency_ms for o in tally.outcomes if o.ok]
    print(
        f"{'all':<10} {sent:>6} {len(errors):>6} {percentile(all_ok, 0.5):>8.1f} "
        f"{percentile(all_ok, 0.99):>8.1f} {max(all_ok, default=float('nan')):>8.1f}"
    )
    for o in errors[:5]:
        print(f"  error ({o.kind}): {o.error}")
    before, after = rss
    print(f"{'process':<22} {'pid':>8} {'RSS start':>10} {'RSS end':>10} {'growth':>9}")
    procs = []
    for name in after:
        start, end = before.get(name, {}), after[name]
        for pid in sorted(set(start) | set(end)):
            role = (end.get(pid) or start[pid])[0]
            a = start[pid][1] if pid in start else None
            b = end[pid][1] if pid in end else None
            growth = f"{(b - a) / 1024:+8.1f}M" if a and b else "  (new/gone)"
            print(
                f"{name + ' ' + role:<22} {pid:>8} "
                f"{(a or 0) / 1024:>9.1f}M {(b or 0) / 1024:>9.1f}M {growth}"
            )
            procs.append(
                {"node": name, "role": role, "pid": pid, "rss_start_kib": a, "rss_end_kib": b}
            )
    written, expected = audit
    print(
        f"broker audit entries written {written}, expected {expected}: "
        f"{'match' if written == expected else 'MISMATCH'}"
    )
    return {
        "sent": sent,
        "seconds": wall,
        "errors": len(errors),
        "error_rate": len(errors) / max(sent, 1),
        "kinds": kinds,
        "processes": procs,
        "audit_written": written,
        "audit_expected": expected,
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=float(os.environ.get("SOAK_RATE", "20")))
    parser.add_argument(
        "--duration", type=float, default=float(os.environ.get("SOAK_DURATION", "60"))
    )
    parser.add_argument("--records", type=int, default=2000, help="synthetic records per member")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--broker-workers", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--keep", action="store_true", help="keep the federation directory")
    args = parser.parse_args()
    if not (0 < args.rate <= 500 and 0 < args.duration <= 3600):
        parser.error("--rate must be in (0, 500] and --duration in (0, 3600]")

    root = Path(tempfile.mkdtemp(prefix="ibex-soak-"))
    members = [m for m in DEMO_MEMBERS if m.id in MEMBERS]
    fed = LocalFederation(root / "fed", members=members)
    fed.create()
    people = seed(fed, args.records)
    try:
        fed.start(["broker"], workers=args.broker_workers)
        fed.start(list(MEMBERS), workers=1)
        workload = Workload(fed, people, args.seed)
        broker_url = fed.nodes["broker"].url
        tally = Tally()
        # Warm up (connections, engines, a pool of hit references), before counting starts.
        for kind in ["hit"] * 4 + list(MIX):
            workload.plan(kind)()
        audit_start = audit_entries(workload.client, broker_url)
        rss_start = rss_snapshot(fed)
        started = time.perf_counter()
        sent = run(workload, args.rate, args.duration, tally)
        wall = time.perf_counter() - started
        expected = audit_start + sum(
            AUDIT_ENTRIES[o.kind] for o in tally.outcomes if o.kind in AUDIT_ENTRIES
        )
        time.sleep(0.5)  # let any late appends land before counting
        written = audit_entries(workload.client, broker_url)
        rss_end = rss_snapshot(fed)
        figures = report(tally, sent, wall, (rss_start, rss_end), (written, expected))
        figures.update(rate=args.rate, duration=args.duration, records=args.records)
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2) + "\n")
        workload.client.close()
    finally:
        fed.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0 if figures["errors"] == 0 and written == expected else 1


if __name__ == "__main__":
    sys.exit(main())
