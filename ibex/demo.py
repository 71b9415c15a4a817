"""``ibex demo``: a realistic border federation on this machine, in one command.

It creates a fresh federation directory (keys, configurations, SQLCipher stores), seeds every
agency with synthetic records (:mod:`ibex.demodata`), starts the broker and the connectors as
real gunicorn processes on loopback, runs the scripted scenario (:mod:`ibex.demo_scenario`) and
prints what happened and why; then it keeps serving until Ctrl-C (or exits, with ``--once``) and
stops every process it started. ``DIR/demo.json`` tells scripts where everything is, and
``DIR/demo-summary.json`` holds each step's expected and actual outcome.

The machinery (:mod:`ibex.demofed`) is the one the integration and e2e tests use.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from ibex import demodata
from ibex.demo_scenario import PARTNER, TRAVELLER_QUERY, Scenario, Step
from ibex.demofed import DEMO_MEMBERS, LocalFederation, busy_ports
from ibex.errors import ConfigError

DEFAULT_PORT = 8400
DEFAULT_RECORDS = 20_000
FOUNDERS = tuple(m.id for m in DEMO_MEMBERS if m.id != PARTNER)
TARGET_TIMEOUT = 2.5
BROKER_SETTINGS: dict[str, Any] = {
    "target_timeout_seconds": TARGET_TIMEOUT,
    "overall_deadline_seconds": TARGET_TIMEOUT + 1.5,
    "checkpoint_every": 100,
    "checkpoint_seconds": 1.0,  # so that step 7 finds every entry under a signed checkpoint
}
CONSOLE_USERS = (
    ("alice", "legal-officer"),
    ("bob", "legal-officer"),
    ("olga", "oversight"),
    ("adam", "admin"),
)
CONSOLE_NOTE = (
    "Two legal officers (a bundle proposed by one must be approved and activated by the "
    "other), an oversight user and an admin; passwords are random for this demo only."
)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="run a realistic border federation on loopback and show what IBEX does",
        description="Create a federation (broker + five agency connectors as gunicorn processes "
        "on 127.0.0.1), seed synthetic records, run a scripted scenario and print what happened "
        "and why; then keep serving until Ctrl-C.",
    )
    p.add_argument("--dir", type=Path, help="keep the federation in DIR (default: a temp dir)")
    p.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"the broker's port on 127.0.0.1; connectors use the next five (default "
        f"{DEFAULT_PORT}; 0: any free ports)",
    )
    p.add_argument(
        "--records",
        type=int,
        default=DEFAULT_RECORDS,
        help=f"synthetic records per agency (default {DEFAULT_RECORDS:,})",
    )
    p.add_argument("--seed", type=int, default=2026, help="seed of the synthetic records")
    p.add_argument(
        "--once", action="store_true", help="exit after the scenario (0: all as expected)"
    )
    p.add_argument(
        "--json", action="store_true", help="print the summary as JSON (the table goes to stderr)"
    )
    p.set_defaults(func=run)


class _Bar:
    """Seeding progress on stderr: a bar on a terminal, one line per agency otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.last = 0.0

    def update(self, label: str, done: int, total: int, *, final: bool = False) -> None:
        now = time.monotonic()
        if not final and (not self.tty or now - self.last < 0.1):
            return
        self.last = now
        frac = min(done / max(total, 1), 1.0)
        text = f"seeding {label:<8} [{'#' * int(frac * 30):<30}] {frac:4.0%} {done:,} records"
        if self.tty:
            self.stream.write("\r" + text + ("\n" if final else ""))
        elif final:
            self.stream.write(text + "\n")
        self.stream.flush()


def _prepare_dir(wanted: Path | None) -> tuple[Path, bool]:
    """The federation directory and whether the user asked to keep it."""
    if wanted is None:
        return Path(tempfile.mkdtemp(prefix="ibex-demo-")), False
    wanted = wanted.resolve()
    if wanted.exists() and any(wanted.iterdir()):
        if not (wanted / "demo.json").is_file():
            raise ConfigError(
                f"{wanted} is not empty and holds no earlier demo; choose a new or empty --dir"
            )
        shutil.rmtree(wanted)  # an earlier demo: start afresh (its keys no longer match)
    wanted.mkdir(parents=True, exist_ok=True)
    return wanted, True


def _write_private(path: Path, doc: dict[str, Any]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=2, ensure_ascii=False)
        fh.write("\n")


def manifest(
    fed: LocalFederation,
    records: dict[str, int],
    joined: bool,
    console_users: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    """What ``DIR/demo.json`` holds: where everything is, and the local demo's credentials."""
    doc = fed.manifest()
    doc["federation_dir"] = str(fed.root)
    doc["audit"]["log_vkey"] = fed.audit_vkey()
    doc["audit"]["usage"] = (
        "GET /v1/audit/entries on the broker with 'Authorization: Bearer <oversight_token>'; "
        "ibex audit verify --url <broker_url> --public-key <log_vkey>"
    )
    for member in doc["members"]:
        member["records"] = records.get(member["id"], 0)
        member["registered"] = member["id"] != PARTNER or joined
        member["joins"] = "during the demo" if member["id"] == PARTNER else "at start"
    doc["console"] = {
        "url": fed.nodes["broker"].url + "/console/",
        "users": console_users or [],
        "note": CONSOLE_NOTE,
    }
    return doc


@contextmanager
def _signals_stop() -> Iterator[None]:
    """SIGTERM and SIGHUP stop the demo as Ctrl-C does (the processes are shut down)."""

    def stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def run(args: argparse.Namespace) -> int:
    if args.records < 0:
        raise ConfigError("--records must be 0 or more")
    if args.port and busy_ports(range(args.port, args.port + len(DEMO_MEMBERS) + 1)):
        busy = busy_ports(range(args.port, args.port + len(DEMO_MEMBERS) + 1))
        raise ConfigError(
            f"port(s) {', '.join(map(str, busy))} on 127.0.0.1 are in use; the demo needs "
            f"{args.port}-{args.port + len(DEMO_MEMBERS)}: choose another --port (0: any free)"
        )
    out = sys.stderr if args.json else sys.stdout
    root, keep = _prepare_dir(args.dir)
    fed = LocalFederation(
        root,
        broker_port=args.port or None,
        relayed=frozenset({"US-USCG"}),
        broker_relayed=frozenset({PARTNER}),
        extra_broker_settings=BROKER_SETTINGS,
    )
    state = _State()
    interrupted = False
    try:
        with _signals_stop():
            _demo(fed, args, out, state)
    except KeyboardInterrupt:
        interrupted = True
        print("\nstopping ...", file=out)
    finally:
        # A second Ctrl-C must not leave gunicorn processes behind half-way through stopping.
        with _ignoring_signals():
            fed.stop()
            print("every process stopped", file=out)
            if not keep and (state.ok or interrupted):
                shutil.rmtree(root, ignore_errors=True)
                print(f"removed {root}", file=out)
            elif not keep:
                print(f"kept {root} for inspection (logs: *.log)", file=out)
    if interrupted and not state.finished:
        return 130  # stopped before the scenario had finished
    return 0 if state.ok else 1


@dataclass
class _State:
    ok: bool = False  # every step of the scenario had its expected outcome
    finished: bool = False  # the scenario ran to its end (what follows is serving)


@contextmanager
def _ignoring_signals() -> Iterator[None]:
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _demo(fed: LocalFederation, args: argparse.Namespace, out: TextIO, state: _State) -> None:
    """Set up, run the scenario, report; with ``--once`` return, else serve until a signal."""
    timings: dict[str, float] = {}
    print(f"IBEX demo: a border federation on 127.0.0.1, in {fed.root}\n", file=out)
    started = time.monotonic()
    fed.create(register=FOUNDERS)
    console_users = fed.add_console_users(CONSOLE_USERS)
    timings["create_seconds"] = time.monotonic() - started

    records = _seed(fed, args, timings)
    started = time.monotonic()
    fed.start(["broker", *FOUNDERS])
    timings["start_seconds"] = time.monotonic() - started
    print(
        f"started the broker and {len(FOUNDERS)} connectors in {timings['start_seconds']:.1f} s "
        f"(gunicorn); {PARTNER} joins during the scenario\n",
        file=out,
    )
    _write_private(fed.root / "demo.json", manifest(fed, records, False, console_users))

    print(_header(), file=out)
    started = time.monotonic()
    scenario = Scenario(fed, work_dir=fed.root, target_timeout=TARGET_TIMEOUT)
    steps = scenario.run(report=lambda step: print(_row(step), file=out, flush=True))
    timings["scenario_seconds"] = time.monotonic() - started
    ok = state.ok = all(s.ok for s in steps)
    state.finished = True
    _write_private(fed.root / "demo.json", manifest(fed, records, True, console_users))
    summary = {
        "ok": ok,
        "federation_dir": str(fed.root),
        "broker_url": fed.nodes["broker"].url,
        "records": records,
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "steps": [s.to_json() for s in steps],
    }
    (fed.root / "demo-summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    failed = [s.label for s in steps if not s.ok]
    verdict = "every step behaved as expected" if ok else "UNEXPECTED: step " + ", ".join(failed)
    where = fed.root / "demo-summary.json"
    kept = "" if args.dir or not args.once else " (removed at exit: --dir DIR keeps it)"
    print(f"\n{verdict} ({timings['scenario_seconds']:.1f} s); summary: {where}{kept}", file=out)
    if args.json:
        print(json.dumps(summary, indent=2, ensure_ascii=False))
    if args.once:
        return
    print(_banner(fed), file=out, flush=True)
    _serve(fed)


def _seed(
    fed: LocalFederation, args: argparse.Namespace, timings: dict[str, float]
) -> dict[str, int]:
    bar = _Bar(sys.stderr)
    records: dict[str, int] = {}
    started = time.monotonic()
    for member in (m.id for m in DEMO_MEMBERS):
        total = args.records + sum(len(v) for v in demodata.planted(member).values())
        done = 0

        def progress(count: int, member: str = member, total: int = total) -> None:
            nonlocal done
            done += count
            bar.update(member, done, total)

        batches = demodata.generate(member, args.records, seed=args.seed)
        records[member] = fed.seed_batches(member, batches, progress)
        bar.update(member, records[member], total, final=True)
    elapsed = time.monotonic() - started
    timings["seed_seconds"] = elapsed
    timings["seed_records_per_second"] = sum(records.values()) / max(elapsed, 1e-9)
    print(
        f"seeded {sum(records.values()):,} synthetic records in {elapsed:.1f} s "
        f"({timings['seed_records_per_second']:,.0f} records/s), validated against the shared "
        "schemas and encrypted at rest (SQLCipher)",
        file=sys.stderr,
    )
    return records


# --- output ------------------------------------------------------------------------------------

_COLUMNS = (4, 54, 30)  # step, what was asked, who; then the result


def _header() -> str:
    a, b, c = _COLUMNS
    return f"{'#':<{a}}{'what was asked':<{b}}{'who':<{c}}result\n" + "-" * 100


def _row(step: Step) -> str:
    a, b, c = _COLUMNS
    indent = " " * a
    lines = [
        f"{step.label:<{a}}{step.title:<{b}}{step.who:<{c}}{'ok' if step.ok else 'UNEXPECTED'}"
    ]
    lines += textwrap.wrap(
        step.actual, 100, initial_indent=f"{indent}outcome: ", subsequent_indent=indent + " " * 9
    )
    if not step.ok:
        lines.append(f"{indent}expected: {step.expected}")
    for n, why in enumerate(step.why):
        first = f"{indent}{'why:' if n == 0 else '':<9}"
        lines += textwrap.wrap(why, 100, initial_indent=first, subsequent_indent=indent + " " * 11)
    return "\n".join(lines) + "\n"


def _ibex_command() -> str:
    argv0 = Path(sys.argv[0])
    return str(argv0) if argv0.name == "ibex" else "ibex"


_QUERY_OPTIONS = ("--config", "--officer", "--purpose", "--legal-basis", "--criteria", "--target")


def _query_command_help() -> str | None:
    """``ibex query --help`` when this installation has that command (built elsewhere in the
    project), else None: the banner mentions only what works."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "ibex.cli", "query", "--help"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def _query_example(fed: LocalFederation, help_text: str) -> str:
    cfg = shlex.quote(str(fed.nodes["CA-CBSA"].config))
    criteria = " ".join(f"--criteria {k}={v}" for k, v in TRAVELLER_QUERY["criteria"].items())
    if not all(option in help_text for option in _QUERY_OPTIONS):
        return f"  {_ibex_command()} query --config {cfg} --purpose border_screening {criteria}"
    q = TRAVELLER_QUERY
    return (
        f"  {_ibex_command()} query --config {cfg} --officer {q['officer']} \\\n"
        f"    --purpose border_screening --legal-basis {q['legal_basis']} "
        f"--jurisdiction {q['jurisdiction']} --type {q['subject_type']} \\\n"
        f"    {criteria} \\\n"
        f"    --request {','.join(q['requested_fields'])} --mode {q['mode']} "
        f"--target {q['targets'][0]}"
    )


def _banner(fed: LocalFederation) -> str:
    broker = fed.nodes["broker"]
    cbsa = fed.nodes["CA-CBSA"]
    assert cbsa.token is not None
    lines = ["", "The federation keeps running; Ctrl-C stops every process.", ""]
    lines.append(f"  {'broker':<9} {broker.url}   (GET /v1/federation, /v1/audit/checkpoint)")
    for m in DEMO_MEMBERS:
        lines.append(f"  {m.id:<9} {fed.nodes[m.id].url}   {m.name}")
    lines += [
        f"  console   {broker.url}/console/   (logins in demo.json: alice and bob legal"
        " officers, olga oversight, adam admin)",
        f"  demo.json {fed.root / 'demo.json'}  (mode 0600: gateway tokens, oversight token)",
        "",
        "Ask US-CBP about a traveller, as CA-CBSA's own systems would:",
    ]
    request = {**TRAVELLER_QUERY, "purpose": "border_screening"}
    body = json.dumps(request, ensure_ascii=False)
    lines += [
        f"  curl -s {cbsa.url}/v1/gateway/queries \\",
        f'    -H "Authorization: Bearer $(cat {shlex.quote(str(cbsa.token))})" \\',
        "    -H 'Content-Type: application/json' \\",
        f"    -d {shlex.quote(body)}",
    ]
    help_text = _query_command_help()
    if help_text is not None:
        lines += ["or with the ibex command:", _query_example(fed, help_text)]
    lines += [
        "",
        "Verify the audit log as an oversight body would:",
        f"  {_ibex_command()} audit verify --url {broker.url} "
        f"--public-key '{fed.audit_vkey()}' --checkpoint {fed.root / 'audit-checkpoint.txt'}",
    ]
    return "\n".join(lines)


def _serve(fed: LocalFederation) -> None:
    """Wait for Ctrl-C (or SIGTERM); stop early, with a message, if a process dies."""
    while True:
        for name, node in fed.nodes.items():
            if node.process is not None and node.process.poll() is not None:
                raise ConfigError(
                    f"{name} exited with status {node.process.returncode}; "
                    f"see {fed.root / (name + '.log')}"
                )
        time.sleep(1.0)
