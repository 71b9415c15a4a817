"""The floor under bench_broker: the same processes and HTTP stack with nothing behind them.

bench_broker's federation, emptied: a broker (gunicorn, 2 workers) and three providers (1 worker
each) serve IBEX's own gunicorn settings, and the client here posts from the same httpx client
and thread pool at the same concurrency. The broker reads the body and fans it out to the three
providers through its own fan-out code (urllib3 and a thread pool); each provider reads the body
and answers. Bodies have the sizes of the real messages (bench/floor_app.py). No signatures,
sealing, policy, audit, database or parsing: whatever the real federation adds, it cannot go
faster than this on the same machine. The direct path posts the three sub-queries straight to
the providers.

Then the same again with IBEX's cryptography and nothing else: each role signs, verifies, seals
and opens what it does for one query in bench_broker (21 PyNaCl operations in all through the
broker, floor_app.Crypto; an agency's gateway would do 9 more).

Prints, for both stacks and both paths, p50 and queries/s at each concurrency, CPU per query by
process and the queries/s that CPU allows on this machine's cores, and two closing lines to set
beside bench_broker's.
All traffic stays on 127.0.0.1; every loop is bounded in count. Not a test.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench_broker import _tree_cpu, cpu_line, cpu_per_query, level_line, run  # noqa: E402
from floor_app import ANSWER_BYTES, INTAKE_BYTES, SUBQUERY_BYTES, Crypto, _fixed  # noqa: E402

from ibex.demofed import LOOPBACK, free_port  # noqa: E402
from ibex.serve import gunicorn_argv  # noqa: E402

PARTNERS = 3


class Floor:
    """The empty federation's processes."""

    def __init__(self, root: Path, broker_workers: int, *, crypto: bool) -> None:
        self.root = root
        self.crypto = crypto
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.urls: dict[str, str] = {}
        self.broker_workers = broker_workers

    def _spawn(self, name: str, app: str, workers: int, env: dict[str, str]) -> None:
        port = free_port()
        argv = gunicorn_argv(app, host=LOOPBACK, port=port, workers=workers, name=name)
        env = {
            **os.environ,
            **env,
            "PYTHONPATH": f"{REPO / 'bench'}{os.pathsep}{REPO}",
            "IBEX_GUNICORN_THREADS": "8",
            "IBEX_FLOOR_CRYPTO": "1" if self.crypto else "0",
            "PROMETHEUS_MULTIPROC_DIR": str(self.root / f"metrics-{name}"),
        }
        with (self.root / f"{name}.log").open("ab") as log:
            self.procs[name] = subprocess.Popen(
                argv, env=env, stdout=log, stderr=log, start_new_session=True
            )
        self.urls[name] = f"http://{LOOPBACK}:{port}"

    def start(self) -> None:
        for i in range(PARTNERS):
            self._spawn(f"provider-{i}", "floor_app:provider()", 1, {})
        targets = ",".join(self.urls[f"provider-{i}"] for i in range(PARTNERS))
        self._spawn(
            "broker", "floor_app:broker()", self.broker_workers, {"IBEX_FLOOR_TARGETS": targets}
        )
        for name, url in self.urls.items():
            deadline = time.monotonic() + 60
            while True:
                if self.procs[name].poll() is not None:
                    raise RuntimeError(f"{name} exited; see {self.root / (name + '.log')}")
                try:
                    if httpx.get(url + "/readyz", timeout=2, trust_env=False).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} was not ready after 60 s")
                time.sleep(0.1)

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far, by role, as bench_broker.cpu_snapshot counts them."""
        import resource

        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "client": usage.ru_utime + usage.ru_stime,
            "broker": _tree_cpu(self.procs["broker"].pid),
            "providers": sum(_tree_cpu(self.procs[f"provider-{i}"].pid) for i in range(PARTNERS)),
        }


class Client:
    """The requesting agency, doing what bench_broker's client does to the bytes it sends and
    receives, and (with ``crypto``) its signatures and sealing."""

    def __init__(self, floor: Floor, *, crypto: bool) -> None:
        self.floor = floor
        self.crypto = Crypto(crypto)
        self.http = httpx.Client(
            trust_env=False, limits=httpx.Limits(max_connections=200), timeout=30.0
        )
        self.pool = ThreadPoolExecutor(max_workers=96)
        self.intake = _fixed(INTAKE_BYTES)
        self.subquery = _fixed(SUBQUERY_BYTES)

    def via_broker(self) -> None:
        self.crypto(sign=1, seal=PARTNERS)  # the query, and its criteria sealed per target
        resp = self.http.post(
            self.floor.urls["broker"] + "/v1/queries",
            content=self.intake,
            headers={"Content-Type": "application/json"},
        )
        if resp.status_code != 200:
            raise RuntimeError(f"broker answered {resp.status_code}")
        # the aggregate's signature, as bench_broker's client checks it (an agency's gateway
        # also verifies each answer's two signatures and opens each payload: 6 + 3 more)
        self.crypto(verify=1)

    def direct(self) -> None:
        # the query and its sealed criteria, and (as bench_broker's direct path does, holding
        # the broker's key) one signed routed query a target; then each answer's signature
        self.crypto(sign=1 + PARTNERS, seal=PARTNERS)

        def one(i: int) -> None:
            resp = self.http.post(
                self.floor.urls[f"provider-{i}"] + "/v1/provider/queries",
                content=self.subquery,
                headers={"Content-Type": "application/json"},
            )
            if resp.status_code != 200 or len(resp.content) != ANSWER_BYTES:
                raise RuntimeError(f"provider-{i} answered {resp.status_code}")

        for f in [self.pool.submit(one, i) for i in range(PARTNERS)]:
            f.result()
        self.crypto(verify=PARTNERS)


def measure(args: argparse.Namespace, crypto: bool) -> tuple[float, float]:
    """Start the empty federation (with IBEX's cryptography or without), run every level, print
    the tables; return the best broker-path queries/s and the least CPU per query (ms)."""
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="ibex-floor-") as tmp:
        floor = Floor(Path(tmp), args.broker_workers, crypto=crypto)
        try:
            floor.start()
            client = Client(floor, crypto=crypto)
            for fn in (client.via_broker, client.direct):  # warm up connections
                run(fn, 4, 40)
            what = "signatures and sealing only" if crypto else "nothing"
            print(
                f"\n== {PARTNERS} partners and a broker ({args.broker_workers} workers) doing "
                f"{what}; {args.queries} queries a run, {cores} cores"
            )
            print(
                f"{'conc':>4} | {'broker p50':>10} {'p99':>8} {'q/s':>7} | "
                f"{'direct p50':>10} {'p99':>8} {'q/s':>7} | "
                f"{'p50 ratio':>9}"
            )
            best, least = 0.0, float("inf")
            cpu_lines = []
            for conc in args.levels:
                c0 = floor.cpu()
                b_lat, b_qps, b_err = run(client.via_broker, conc, args.queries)
                c1 = floor.cpu()
                d_lat, d_qps, d_err = run(client.direct, conc, args.queries)
                c2 = floor.cpu()
                best = max(best, b_qps)
                print(level_line(conc, (b_lat, b_qps, b_err), (d_lat, d_qps, d_err)))
                b_cpu = cpu_per_query(c0, c1, len(b_lat))
                least = min(least, sum(b_cpu.values()))
                cpu_lines.append(cpu_line(conc, b_cpu, cpu_per_query(c1, c2, len(d_lat))))
            print(f"CPU per query by process (ms), and the q/s that CPU allows on {cores} cores:")
            for line in cpu_lines:
                print(line)
        finally:
            floor.stop()
    return best, least


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=2000, help="queries per run")
    parser.add_argument("--broker-workers", type=int, default=2)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32])
    args = parser.parse_args()
    best, least = measure(args, crypto=False)
    signed, signed_least = measure(args, crypto=True)
    print(
        f"\nfloor: at best {best:.0f} fanned-out queries/s through an empty broker "
        f"({best * PARTNERS:.0f} sub-queries/s; at least {least:.2f} ms of CPU a query)"
    )
    print(
        f"floor with IBEX's signatures and sealing: at best {signed:.0f} fanned-out queries/s "
        f"(at least {signed_least:.2f} ms of CPU a query); set bench_broker's figures beside them"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
