"""The same query mix through the broker vs straight to the providers, side by side.

A federation of real gunicorn processes on loopback: the broker (2 workers) and three provider
connectors (1 worker each), each holding a few thousand person records, plus the requesting
agency's keys in this process. Every query asks all three partners.

- broker path: build a signed query with criteria sealed per target, POST it to the broker, which
  verifies, decides three times with Rego, audits durably, fans out, verifies the three answers,
  countersigns and signs the aggregate; the client checks the broker's signature.
- direct path (the baseline): the client itself builds the three broker-signed routed queries
  (it holds the broker key here, as if there were no broker) and POSTs them to the three
  providers in parallel, then checks each provider's signature. No policy, no audit, no
  intake verification: what the broker adds is the difference.

Prints p50/p99 latency and queries/s at concurrency 1, 8 and 32 for both paths, and the ratio.
All traffic stays on 127.0.0.1; every loop is bounded in count. Not a test.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from ibex.demofed import DEMO_MEMBERS, LocalFederation
from ibex.envelope import sign, verify
from ibex.federation import build_trust
from ibex.keys import MemberKeys, b64
from ibex.messages import (
    BrokerAnswer,
    BrokerResponse,
    Decision,
    FederationDocument,
    ProviderAnswer,
    ProviderRequest,
    ProviderResponse,
    Reason,
    RoutedQuery,
)
from ibex.protocol import build_query, new_id, new_nonce
from ibex.timeutil import format_ts, now

REPO = Path(__file__).resolve().parent.parent
REQUESTER = "CA-CBSA"
PARTNERS = ("US-CBP", "CA-RCMP", "US-USCG")
FIELDS = ["date_of_birth", "name", "nationalities"]

BENCH_AGREEMENT = """\
id: {provider}--CA-CBSA--bench
title: Benchmark agreement (synthetic)
provider: {provider}
recipients: [CA-CBSA]
purposes: [border_screening]
legal_bases:
  - id: ca_customs_act_s107
    citation: Customs Act, R.S.C. 1985, c. 1 (2nd Supp.), s. 107
subject_types: [person]
fields:
  border_screening:
    person: [name, date_of_birth, nationalities]
mode: full
jurisdictions: [CA]
valid_from: "2026-01-01"
valid_until: "2030-12-31"
handling: H1
retention_days: 30
requires_case_reference: false
"""


def person(i: int, member: str) -> dict[str, object]:
    return {
        "record": {"source_id": f"{member}-{i}", "handling": "H1"},
        "name": {"given_names": f"GIVEN{i % 997}", "surname": f"SURNAME{i % 4999}"},
        "date_of_birth": f"{1950 + i % 50}-{1 + i % 12:02d}-{1 + i % 28:02d}",
        "nationalities": ["CAN"],
    }


def _tree_cpu(root: int) -> float:
    """CPU seconds (user + system) of a process and all its descendants, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    cpu: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:  # gone meanwhile
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(entry))
        cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += cpu.get(pid, 0.0)
        todo.extend(children.get(pid, []))
    return total


def cpu_snapshot(fed: LocalFederation) -> dict[str, float] | None:
    """CPU seconds so far: this process (the requesting agency), the broker, the providers."""
    if not os.path.isdir("/proc/self"):
        return None
    usage = resource.getrusage(resource.RUSAGE_SELF)

    def node(name: str) -> float:
        process = fed.nodes[name].process
        return _tree_cpu(process.pid) if process is not None else 0.0

    return {
        "client": usage.ru_utime + usage.ru_stime,
        "broker": node("broker"),
        "providers": sum(node(p) for p in PARTNERS),
    }


def cpu_per_query(
    before: dict[str, float] | None, after: dict[str, float] | None, queries: int
) -> dict[str, float]:
    """Milliseconds of CPU per query, by role, between two snapshots."""
    if before is None or after is None:
        return {}
    return {k: (after[k] - before[k]) * 1000 / max(queries, 1) for k in before}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Bench:
    def __init__(self, fed: LocalFederation) -> None:
        self.fed = fed
        self.requester = MemberKeys.load(fed.root / REQUESTER / "keys", REQUESTER)
        self.broker_keys = MemberKeys.load(fed.root / "broker" / "keys", "IBEX-BROKER")
        self.client = httpx.Client(
            trust_env=False, limits=httpx.Limits(max_connections=200), timeout=30.0
        )
        self.pool = ThreadPoolExecutor(max_workers=96)
        resp = self.client.get(fed.nodes["broker"].url + "/v1/federation")
        from ibex.envelope import Envelope
        from ibex.federation import verify_document

        self.doc: FederationDocument = verify_document(
            Envelope.parse(resp.content), [self.broker_keys.public.signing]
        )
        self.trust = build_trust(self.doc)
        self.targets = {
            m: MemberKeys.load(fed.root / m / "keys", m).public.encryption for m in PARTNERS
        }
        self.counter = 0
        self.lock = threading.Lock()

    def _query(self) -> object:
        with self.lock:
            self.counter += 1
            i = self.counter
        return build_query(
            self.requester,
            officer="bench-1",
            purpose="border_screening",
            legal_basis="ca_customs_act_s107",
            jurisdiction="CA",
            subject_type="person",
            mode="full",
            criteria={
                "name.surname": f"SURNAME{i % 4999}",
                "name.given_names": f"GIVEN{i % 997}",
                "date_of_birth": f"{1950 + i % 50}-{1 + i % 12:02d}-{1 + i % 28:02d}",
            },
            requested_fields=FIELDS,
            targets=self.targets,
        )

    def via_broker(self) -> None:
        out = self._query()
        resp = self.client.post(
            self.fed.nodes["broker"].url + "/v1/queries",
            content=out.intake_request().to_bytes(),  # type: ignore[attr-defined]
            headers={"Content-Type": "application/json"},
        )
        if resp.status_code != 200:
            raise RuntimeError(f"broker answered {resp.status_code}: {resp.text[:300]}")
        body = BrokerResponse.parse(resp.content, max_bytes=16 << 20)
        v = verify(body.answer, self.trust, payload_type=BrokerAnswer.PAYLOAD_TYPE)
        agg = BrokerAnswer.parse(v.payload, max_bytes=16 << 20)
        if sum(r.status == "answered" for r in agg.results) != len(PARTNERS):
            raise RuntimeError(f"not all partners answered: {[r.status for r in agg.results]}")

    def direct(self) -> None:
        out = self._query()
        issued = now()

        def one(member: str) -> None:
            decision = Decision(
                target=member,
                allow=True,
                mode="full",
                fields=tuple(FIELDS),
                withheld=(),
                reasons=(Reason(rule="allow.agreement", text="bench"),),
                policy_digest="sha256:" + "0" * 64,
            )
            rq = RoutedQuery(
                v=1,
                routing_id=new_id(),
                target=member,
                issued_at=format_ts(issued),
                expires_at=format_ts(issued + 60),
                nonce=new_nonce(),
                query=out.envelope,  # type: ignore[attr-defined]
                decision=decision,
            )
            env = sign(RoutedQuery.PAYLOAD_TYPE, rq.to_bytes(), self.broker_keys.signing_key)
            body = ProviderRequest(routed=env, sealed_criteria=b64(out.sealed[member]))  # type: ignore[attr-defined]
            node = self.fed.nodes[member]
            resp = self.client.post(
                node.url + "/v1/provider/queries",
                content=body.to_bytes(),
                headers={"Content-Type": "application/json"},
            )
            if resp.status_code != 200:
                raise RuntimeError(f"{member} answered {resp.status_code}: {resp.text[:300]}")
            pr = ProviderResponse.parse(resp.content)
            v = verify(pr.answer, self.trust, payload_type=ProviderAnswer.PAYLOAD_TYPE)
            ProviderAnswer.parse(v.payload)

        for f in [self.pool.submit(one, m) for m in PARTNERS]:
            f.result()

    def stage_totals(self) -> dict[str, tuple[float, float]]:
        """The broker's own per-stage time (sum, count) from its /metrics, summed over workers."""
        from prometheus_client.parser import text_string_to_metric_families

        text = self.client.get(self.fed.nodes["broker"].url + "/metrics").text
        totals: dict[str, list[float]] = {}
        for family in text_string_to_metric_families(text):
            if family.name != "ibex_broker_stage_seconds":
                continue
            for sample in family.samples:
                kind = sample.name.rsplit("_", 1)[-1]
                if kind in ("sum", "count"):
                    slot = totals.setdefault(sample.labels["stage"], [0.0, 0.0])
                    slot[kind == "count"] += sample.value
        return {stage: (v[0], v[1]) for stage, v in totals.items()}


Run = tuple[list[float], float, list[str]]  # latencies (ms), calls/s, what each error was


def level_line(conc: int, broker: Run, direct: Run) -> str:
    """One concurrency level: p50, p99 and q/s of both paths, and the p50 ratio."""
    (b_lat, b_qps, b_err), (d_lat, d_qps, d_err) = broker, direct
    bp50, dp50 = statistics.median(b_lat), statistics.median(d_lat)
    return (
        f"{conc:>4} | {bp50:>8.2f}ms {percentile(b_lat, 0.99):>6.1f}ms {b_qps:>7.0f} | "
        f"{dp50:>8.2f}ms {percentile(d_lat, 0.99):>6.1f}ms {d_qps:>7.0f} | "
        f"{bp50 / dp50:>8.2f}x"
        + (
            f"  errors: broker {len(b_err)}{_kinds(b_err)}, direct {len(d_err)}{_kinds(d_err)}"
            if b_err or d_err
            else ""
        )
    )


def _kinds(errors: list[str]) -> str:
    """The kinds of error, counted: " (ReadTimeout x2)"; nothing for none."""
    counts = Counter(errors)
    return " (" + ", ".join(f"{k} x{n}" for k, n in sorted(counts.items())) + ")" if errors else ""


def cpu_line(conc: int, b_cpu: dict[str, float], d_cpu: dict[str, float]) -> str:
    """CPU per query by process on both paths, and the q/s it allows on this machine's cores."""
    cores = os.cpu_count() or 1
    b_all, d_all = sum(b_cpu.values()), sum(d_cpu.values())
    return (
        f"{conc:>4} | broker path: agency {b_cpu['client']:.2f}"
        f"  broker {b_cpu['broker']:.2f}  providers {b_cpu['providers']:.2f}"
        f"  = {b_all:.2f} ms -> at most {cores * 1000 / b_all:.0f} q/s"
        f" | direct: agency {d_cpu['client']:.2f}"
        f"  providers {d_cpu['providers']:.2f}  = {d_all:.2f} ms"
        f" -> at most {cores * 1000 / d_all:.0f} q/s"
    )


def run(fn: object, concurrency: int, count: int) -> Run:
    """``count`` calls of ``fn`` from ``concurrency`` threads: latencies (ms), calls/s, and the
    type of each call's exception (a call that raised is counted here, not in the latencies)."""
    latencies: list[float] = []
    errors: list[str] = []
    lat_lock = threading.Lock()
    remaining = [count]

    def worker() -> None:
        while True:
            with lat_lock:
                if remaining[0] <= 0:
                    return
                remaining[0] -= 1
            t = time.perf_counter()
            try:
                fn()  # type: ignore[operator]
            except Exception as exc:
                with lat_lock:
                    errors.append(type(exc).__name__)
                continue
            with lat_lock:
                latencies.append((time.perf_counter() - t) * 1000)

    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, len(latencies) / (time.perf_counter() - start), errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=3000, help="person records per partner")
    parser.add_argument("--queries", type=int, default=300, help="queries per run")
    parser.add_argument("--broker-workers", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="keep the federation directory")
    parser.add_argument(
        "--levels", type=int, nargs="+", default=[1, 8, 32], help="concurrency levels to run"
    )
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="ibex-bench-"))
    policies = root / "policies"
    shutil.copytree(REPO / "policies", policies)
    for p in PARTNERS:
        (policies / "agreements" / f"{p}--CA-CBSA--bench.yaml").write_text(
            BENCH_AGREEMENT.format(provider=p)
        )
    members = [m for m in DEMO_MEMBERS if m.id in (REQUESTER, *PARTNERS)]
    fed = LocalFederation(
        root / "fed",
        members=members,
        policies_dir=policies,
        # Generous limits: this measures the broker's cost, not its time-outs.
        extra_broker_settings={
            "checkpoint_every": 10000,
            "checkpoint_seconds": 60,
            "target_timeout_seconds": 30,
            "overall_deadline_seconds": 30,
        },
    )
    fed.create()
    for p in PARTNERS:
        fed.seed(p, "person", [person(i, p) for i in range(args.records)])
    try:
        fed.start(["broker"], workers=args.broker_workers)
        fed.start(list(PARTNERS), workers=1)
        bench = Bench(fed)
        for fn in (bench.via_broker, bench.direct):  # warm up connections and engines
            run(fn, 4, 20)
        print(
            f"{len(PARTNERS)} partners, {args.records} persons each, {args.queries} queries a run"
        )
        print(
            f"{'conc':>4} | {'broker p50':>10} {'p99':>8} {'q/s':>7} | "
            f"{'direct p50':>10} {'p99':>8} {'q/s':>7} | {'p50 ratio':>9}"
        )
        stages: list[str] = []
        cpu_lines: list[str] = []
        for conc in args.levels:
            before = bench.stage_totals()
            cpu0 = cpu_snapshot(fed)
            b_lat, b_qps, b_err = run(bench.via_broker, conc, args.queries)
            cpu1 = cpu_snapshot(fed)
            after = bench.stage_totals()
            spent = {
                stage: (total - before.get(stage, (0.0, 0.0))[0]) * 1000 / max(len(b_lat), 1)
                for stage, (total, _) in sorted(after.items())
            }
            stages.append(f"{conc:>4} | " + "  ".join(f"{k} {v:.2f}" for k, v in spent.items()))
            d_lat, d_qps, d_err = run(bench.direct, conc, args.queries)
            cpu2 = cpu_snapshot(fed)
            b_cpu = cpu_per_query(cpu0, cpu1, len(b_lat))
            d_cpu = cpu_per_query(cpu1, cpu2, len(d_lat))
            if b_cpu and d_cpu:
                cpu_lines.append(cpu_line(conc, b_cpu, d_cpu))
            print(level_line(conc, (b_lat, b_qps, b_err), (d_lat, d_qps, d_err)))
        print(f"fanned-out sub-queries/s at the best broker level: x{len(PARTNERS)} the q/s above")
        print("where the broker's time goes (ms per query, mean, from its own /metrics; audit is")
        print("two group commits, route is the fan-out round trip to the partners):")
        for line in stages:
            print(line)
        if cpu_lines:
            print(
                f"CPU per query by process (ms; agency = this process, providers = the three "
                f"together), and the q/s that CPU allows on {os.cpu_count()} cores:"
            )
            for line in cpu_lines:
                print(line)
    finally:
        fed.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
