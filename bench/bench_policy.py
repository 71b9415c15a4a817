"""Policy decisions per second: regorus (embedded), with the shipped agreements and with 1,000
synthetic ones; single thread, two threads, two processes; with and without the decision cache;
and regopy (rego-cpp) for comparison. Prints medians and ratios. Not a test.

The headline is the UNCACHED figure (every decision a full Rego evaluation through
``RegorusEngine.decide``: input conversion, evaluation and the check of the result); the cached
figure is printed on its own line, because it holds only for workloads that repeat.

    .venv/bin/python bench/bench_policy.py [--quick]

Workloads: inputs are the differential-test corpus (every agreement with allowed and denied
variants). "Uncached" runs the corpus over and over with the decision cache off, so each
decision is a full Rego evaluation. "Cached" models a screening day: questions drawn at random
from the whole corpus (the policy sees metadata, never the criteria values, the officer or the
case reference, so a question asked again is the same decision).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ibex.policy_bundle import PolicyBundle  # noqa: E402
from ibex.policy_engine import RegorusEngine  # noqa: E402
from tests.support.policy_corpus import corpus, synthetic_policies  # noqa: E402

REPEATS = 5
DAY = 2000  # questions in the screening day


def uncached(inputs: list[tuple[str, dict[str, Any]]], n: int) -> list[dict[str, Any]]:
    """n inputs, the corpus over and over; run with the decision cache off, so that every one is
    a full evaluation."""
    return [inputs[i % len(inputs)][1] for i in range(n)]


def screening_day(inputs: list[tuple[str, dict[str, Any]]], n: int) -> list[dict[str, Any]]:
    """n questions drawn from every kind of question in the corpus (allowed and denied, every
    pair of members and agreement), each asked by any officer about any case. Neither the
    officer nor the case reference reaches the policy (only whether a case is cited), so the
    distinct decisions of the day are the kinds of question: with 2,000 questions and the
    250-input corpus, about 1 in 8 is a miss."""
    rng = random.Random(11)
    return [rng.choice(inputs)[1] for _ in range(n)]


def run_single(engine: RegorusEngine, inputs: list[dict[str, Any]]) -> tuple[float, list[float]]:
    latencies = []
    start = time.perf_counter()
    for inp in inputs:
        t = time.perf_counter()
        engine.decide(inp)
        latencies.append(time.perf_counter() - t)
    return len(inputs) / (time.perf_counter() - start), latencies


def run_threads(engine: RegorusEngine, inputs: list[dict[str, Any]], threads: int) -> float:
    barrier = threading.Barrier(threads + 1)

    def work(chunk: list[dict[str, Any]]) -> None:
        engine.decide(chunk[0])
        barrier.wait()
        for inp in chunk:
            engine.decide(inp)

    workers = [threading.Thread(target=work, args=(inputs[i::threads],)) for i in range(threads)]
    for w in workers:
        w.start()
    barrier.wait()
    start = time.perf_counter()
    for w in workers:
        w.join()
    return len(inputs) / (time.perf_counter() - start)


def _process_worker(
    policies: str, inputs: list[dict[str, Any]], cache: int, queue: Any, go: Any
) -> None:
    engine = RegorusEngine(PolicyBundle.load(Path(policies)), cache_size=cache)
    engine.decide(inputs[0])
    queue.put("ready")
    go.wait()
    start = time.perf_counter()
    for inp in inputs:
        engine.decide(inp)
    queue.put(time.perf_counter() - start)


def run_processes(policies: Path, inputs: list[dict[str, Any]], procs: int, cache: int) -> float:
    ctx = multiprocessing.get_context("spawn")
    queues = [ctx.Queue() for _ in range(procs)]
    go = ctx.Event()
    workers = [
        ctx.Process(target=_process_worker, args=(str(policies), inputs[i::procs], cache, q, go))
        for i, q in enumerate(queues)
    ]
    for w in workers:
        w.start()
    for q in queues:
        assert q.get(timeout=120) == "ready"
    go.set()
    elapsed = [q.get(timeout=600) for q in queues]
    for w in workers:
        w.join()
    return len(inputs) / max(elapsed)


_REGOPY = r"""
import json, sys, time, regopy
from pathlib import Path
from ibex.policy_bundle import PolicyBundle
bundle = PolicyBundle.load(Path(sys.argv[1]))
inputs = [json.loads(l) for l in open(sys.argv[2])]
r = regopy.Interpreter()
for rel, text in sorted(bundle.modules.items()):
    r.add_module(rel, text)
r.add_data_json(bundle.data_json)
compiled = r.build("data.ibex.decision", ["ibex/decision"])
times = []
for inp in inputs:
    t = time.perf_counter()
    r.set_input_term(json.dumps(inp))
    r.query_bundle_entrypoint(compiled, "ibex/decision")
    times.append(time.perf_counter() - t)
print(json.dumps(times))
"""


def regopy_rate(policies: Path, inputs: list[dict[str, Any]]) -> float | None:
    """regopy in a subprocess (it may abort its process on some constructs); None if it fails."""
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        f.write("\n".join(json.dumps(i) for i in inputs))
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _REGOPY, str(policies), f.name],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=900,
            check=False,
        )
    finally:
        os.unlink(f.name)
    if proc.returncode != 0:
        print(f"  regopy failed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}")
        return None
    times = json.loads(proc.stdout)
    return 1.0 / statistics.median(times)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench(label: str, policies: Path, n: int, regopy_n: int) -> None:
    bundle = PolicyBundle.load(policies)
    inputs = corpus(bundle)
    allowed = sum(RegorusEngine(bundle, cache_size=0).decide(i).allow for _, i in inputs)
    print(
        f"\n== {label}: {len(bundle.agreements)} agreements, {len(inputs)} corpus inputs "
        f"({allowed} allowed), {n} decisions per run, median of {REPEATS} runs"
    )
    cold = RegorusEngine(bundle, cache_size=0)
    work = uncached(inputs, n)
    singles, lat = [], []
    for _ in range(REPEATS):
        rate, latencies = run_single(cold, work)
        singles.append(rate)
        lat.extend(latencies)
    single = statistics.median(singles)
    print(
        f"  regorus uncached, 1 thread   : {single:9.0f} decisions/s   "
        f"p50 {pct(lat, 0.5) * 1e6:6.0f} us   p99 {pct(lat, 0.99) * 1e6:6.0f} us"
    )
    two = statistics.median(run_threads(cold, work, 2) for _ in range(REPEATS))
    print(
        f"  regorus uncached, 2 threads  : {two:9.0f} decisions/s   ({two / single:.2f}x; "
        "regorus holds the GIL while it evaluates)"
    )
    procs = statistics.median(run_processes(policies, work, 2, 0) for _ in range(3))
    print(f"  regorus uncached, 2 processes: {procs:9.0f} decisions/s   ({procs / single:.2f}x)")
    print("  -- with the decision cache (holds only where decisions repeat) --")
    # A day's hit rate depends on its length, so --quick does not shorten the day.
    day = screening_day(inputs, max(n, DAY))
    warm_rates = []
    for _ in range(REPEATS):
        warm = RegorusEngine(bundle)
        warm_rates.append(run_single(warm, day)[0])
    hits = warm.cache_hits / len(day)
    print(
        f"  regorus cached, 1 thread     : {statistics.median(warm_rates):9.0f} decisions/s   "
        f"(screening day, {hits:.0%} cache hits)"
    )
    cached_procs = statistics.median(run_processes(policies, day, 2, 8192) for _ in range(3))
    print(f"  regorus cached, 2 processes  : {cached_procs:9.0f} decisions/s")
    rate = regopy_rate(policies, work[:regopy_n])
    if rate is not None:
        print(
            f"  regopy (rego-cpp), 1 thread  : {rate:9.0f} decisions/s   "
            f"(regorus/regopy = {single / rate:.1f}x; median of {regopy_n}, in a subprocess)"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer decisions per run")
    args = parser.parse_args()
    n = 400 if args.quick else 2000
    regopy_n = 20 if args.quick else 100
    print(f"bench_policy: {os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    bench("shipped agreements", ROOT / "policies", n, regopy_n)
    with tempfile.TemporaryDirectory() as tmp:
        bench("1,000 synthetic agreements", synthetic_policies(Path(tmp) / "p", 1000), n, regopy_n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
