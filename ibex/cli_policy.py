"""``ibex policy``: work with the Rego policies and disclosure agreements.

For programmers: ``test`` runs the Rego unit tests with coverage. For legal officers: ``check``
(static findings), ``explain`` (a decision with every reason and citation), ``simulate`` (what a
candidate would change in recorded decisions), ``diff`` (what a change allows or forbids), and
the two-person activation steps ``propose``, ``review``, ``activate``, ``rollback``, ``list``
against a broker's store (``--broker-config``). Output is sentences; ``--json`` for machines.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ibex.errors import BadInput

DEFAULT_POLICIES = Path("policies")


def register(sub: Any) -> None:
    p = sub.add_parser("policy", help="test and inspect the Rego policies and agreements")
    psub = p.add_subparsers(dest="policy_command", metavar="ACTION", required=True)

    t = psub.add_parser(
        "test",
        help="run policies/**/*_test.rego and print line coverage",
        description="Run every test_* rule of every *_test.rego file with regorus, against the "
        "bundle's modules and data, and print each result and the line coverage of each "
        "module. Exits 1 if a test fails or coverage is below --coverage-min.",
    )
    _policies_arg(t)
    t.add_argument(
        "--coverage-min",
        type=float,
        default=90.0,
        metavar="PERCENT",
        help="fail when line coverage of the policy modules is below this (default 90)",
    )
    t.add_argument("--quiet", action="store_true", help="print failures and the summary only")
    t.set_defaults(func=_test)

    c = psub.add_parser(
        "check",
        help="validate agreements and report findings in plain language",
        description="Validate every agreement against its schema, compile the Rego, and report "
        "agreements that can never apply, that allow too much, or that overlap or contradict "
        "each other. Exits 1 when there is an error finding.",
    )
    _policies_arg(c)
    c.add_argument("--broker-config", type=Path, help="also check members against this broker")
    c.add_argument("--today", metavar="YYYY-MM-DD", help="the date that decides what expired")
    _json_arg(c)
    c.set_defaults(func=_check)

    e = psub.add_parser(
        "explain",
        help="the decision for each target of a query, with every reason",
        description="QUERY.json is a query (as the broker receives it) or a plain gateway "
        "request with a requester. Without --policies, a broker's active bundle is used.",
    )
    e.add_argument("query", type=Path, metavar="QUERY.json")
    e.add_argument("--policies", type=Path, metavar="DIR", help="the policies directory")
    e.add_argument("--broker-config", type=Path, help="use this broker's members and bundle")
    e.add_argument("--at", metavar="YYYY-MM-DD", help="decide as on this day (default: now)")
    _json_arg(e)
    e.set_defaults(func=_explain)

    s = psub.add_parser(
        "simulate",
        help="replay recorded decisions under a candidate policy set",
        description="Replay the decision inputs recorded in the broker's audit log (metadata "
        "only) under the candidate and report every decision that would change, by partner "
        "and purpose.",
    )
    s.add_argument("--candidate", type=Path, required=True, metavar="DIR")
    s.add_argument("--broker-config", type=Path, required=True)
    s.add_argument("--since", metavar="YYYY-MM-DD", help="only decisions from this day on")
    s.add_argument(
        "--against-current",
        action="store_true",
        help="compare with the current bundle replayed on the same inputs, not the records",
    )
    _json_arg(s)
    s.set_defaults(func=_simulate)

    d = psub.add_parser("diff", help="what NEW allows or forbids that OLD did not")
    d.add_argument("old", type=Path, metavar="OLD")
    d.add_argument("new", type=Path, metavar="NEW")
    _json_arg(d)
    d.set_defaults(func=_diff)

    for name, text in (
        ("propose", "store a policy directory as a candidate bundle"),
        ("review", "approve or reject a proposed bundle (not its proposer)"),
        ("activate", "make an approved bundle active (not its proposer)"),
        ("rollback", "re-activate an earlier bundle (not who activated the current one)"),
        ("list", "list stored bundles and the activation history"),
    ):
        a = psub.add_parser(name, help=text)
        a.add_argument("--broker-config", type=Path, required=True)
        if name != "list":
            a.add_argument("--officer", required=True, help="your legal-officer pseudonym")
        if name == "propose":
            a.add_argument("source", type=Path, metavar="DIR", help="the policies directory")
        elif name != "list":
            a.add_argument("digest", metavar="DIGEST", help="sha256:… as listed")
        if name in ("propose", "review"):
            a.add_argument("--note", default="", help="a note for the other officer")
        if name == "review":
            verdict = a.add_mutually_exclusive_group(required=True)
            verdict.add_argument("--approve", action="store_true")
            verdict.add_argument("--reject", action="store_true")
        _json_arg(a)
        a.set_defaults(func=_lifecycle, action=name)


def _policies_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--policies",
        type=Path,
        default=DEFAULT_POLICIES,
        metavar="DIR",
        help="the policies directory (default: ./policies)",
    )


def _json_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of sentences")


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def _day(text: str, what: str) -> float:
    try:
        return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC).timestamp()
    except ValueError:
        raise BadInput(f"{what} must be a date like 2026-03-01") from None


# --- a broker's stores, opened without the broker package (the kernel may not import it) --------


@dataclass
class BrokerStores:
    config: Any
    conn: Any
    audit: Any
    bundles: Any

    def federation(self) -> Any:
        from ibex.envelope import Envelope
        from ibex.messages import FederationDocument

        row = self.conn.execute("SELECT envelope FROM federation WHERE id = 1").fetchone()
        if row is None:
            raise BadInput("this broker has published no federation document")
        return FederationDocument.parse(Envelope.parse(bytes(row[0])).payload)

    def document_at(self, version: int) -> Any:
        """The federation document published as ``version``, if kept (as the broker's
        MemberRegistry.document_at; a store the broker has not opened since it began keeping
        them has no history: None)."""
        from ibex.envelope import Envelope
        from ibex.messages import FederationDocument

        has_history = self.conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'federation_history'"
        ).fetchone()
        if has_history is None:
            return None
        row = self.conn.execute(
            "SELECT envelope FROM federation_history WHERE version = ?", (version,)
        ).fetchone()
        return (
            None if row is None else FederationDocument.parse(Envelope.parse(bytes(row[0])).payload)
        )


@contextmanager
def broker_stores(config_path: Path) -> Iterator[BrokerStores]:
    from ibex.auditlog import AuditLog
    from ibex.config import BrokerConfig, load_config
    from ibex.keys import MemberKeys
    from ibex.policy_lifecycle import BundleStore
    from ibex.store import load_db_key, open_encrypted

    config = load_config(BrokerConfig, config_path)
    key = load_db_key(config.db_key_file, config.db_key_env)
    conn = open_encrypted(Path(config.data_dir) / "broker.db", key)
    audit = AuditLog(
        Path(config.data_dir) / "audit.db",
        key,
        # The same origin as broker.services.audit_origin (tests assert it).
        origin=f"{config.federation}.ibex/{config.broker_id.lower()}/audit",
        signing_key=MemberKeys.load(config.keys_dir, config.broker_id).signing_key,
    )
    try:
        store = BundleStore(conn, audit=audit, retention_days=config.audit_retention_days)
        yield BrokerStores(config, conn, audit, store)
    finally:
        audit.close()
        conn.close()


@contextmanager
def _current_policies(args: argparse.Namespace, stores: BrokerStores | None) -> Iterator[Path]:
    """--policies; else the broker's active bundle; else its policies_dir; else ./policies."""
    if args.policies is not None:
        yield args.policies
    elif stores is not None and stores.bundles.active() is not None:
        with tempfile.TemporaryDirectory(prefix="ibex-active-") as tmp:
            yield stores.bundles.materialise(stores.bundles.active().digest, Path(tmp) / "b")
    elif stores is not None:
        yield Path(stores.config.policies_dir)
    else:
        yield DEFAULT_POLICIES


@contextmanager
def _maybe_stores(path: Path | None) -> Iterator[BrokerStores | None]:
    if path is None:
        yield None
    else:
        with broker_stores(path) as stores:
            yield stores


# --- actions ---------------------------------------------------------------------------------


def _test(args: argparse.Namespace) -> int:
    from ibex.policy_bundle import PolicyBundle
    from ibex.policy_testing import run_tests

    report = run_tests(PolicyBundle.load(args.policies))
    for result in report.results:
        if not result.passed:
            print(f"FAIL {result.file}: {result.name}: {result.detail}")
        elif not args.quiet:
            print(f"PASS {result.file}: {result.name}")
    print()
    print("coverage (lines of policy modules evaluated by the tests):")
    for cov in report.coverage:
        missing = ",".join(str(n) for n in sorted(cov.not_covered))
        print(
            f"  {cov.file:32s} {cov.percent:6.1f}%"
            + (f"  not covered: {missing}" if missing else "")
        )
    passed = len(report.results) - len(report.failed)
    print(f"total {report.percent:.1f}% ; {passed} passed, {len(report.failed)} failed")
    if not report.results:
        print("no test rules found: a policy without tests does not pass")
        return 1
    if report.failed:
        return 1
    if report.percent < args.coverage_min:
        print(f"coverage {report.percent:.1f}% is below the minimum {args.coverage_min:g}%")
        return 1
    return 0


def _check(args: argparse.Namespace) -> int:
    from ibex.policy_analysis import check

    if args.today:
        _day(args.today, "--today")
    with _maybe_stores(args.broker_config) as stores:
        members = stores.federation().members if stores is not None else None
        findings = check(args.policies, today=args.today, members=members)
    errors = sum(f.severity == "error" for f in findings)
    if args.json:
        _print_json([f.to_json() for f in findings])
    else:
        for f in findings:
            where = f" [{f.agreement}{': ' + f.clause if f.clause else ''}]" if f.agreement else ""
            print(f"{f.severity.upper():8s}{f.code}{where}\n        {f.message}")
        warnings = sum(f.severity == "warning" for f in findings)
        print(f"\n{errors} error(s), {warnings} warning(s), {len(findings)} finding(s) in all.")
    return 1 if errors else 0


def _explain(args: argparse.Namespace) -> int:
    from ibex.jsonio import loads_strict
    from ibex.policy_analysis import explain
    from ibex.policy_bundle import PolicyBundle

    try:
        query = loads_strict(args.query.read_bytes(), what=str(args.query))
    except OSError as exc:
        raise BadInput(f"{args.query} cannot be read: {exc.strerror}") from None
    if not isinstance(query, dict):
        raise BadInput(f"{args.query} does not hold a JSON object")
    at = _day(args.at, "--at") + 43200 if args.at else None
    with _maybe_stores(args.broker_config) as stores, _current_policies(args, stores) as policies:
        members = stores.federation() if stores is not None else None
        bundle = PolicyBundle.load(policies)
        out = explain(bundle, query, members, at)
    if args.json:
        _print_json({"policy_digest": bundle.digest, "explanations": [e.to_json() for e in out]})
        return 0
    print(f"Policy bundle {bundle.digest}")
    if any(e.members_assumed for e in out):
        print(
            "Note: member facts were not taken from a federation document; each member is "
            "assumed active, acting in the country its id starts with (use --broker-config)."
        )
    for e in out:
        d = e.decision
        verdict = f"ALLOWED ({d.mode}" + (f"; fields {', '.join(d.fields)})" if d.fields else ")")
        print(f"\n{e.target}: {verdict if d.allow else 'DENIED'}")
        if e.agreement_clause:
            title = f" — {e.agreement_title}" if e.agreement_title else ""
            print(f"  clause: {e.agreement_clause}{title}")
        for r in d.reasons:
            print(f"  [{r.rule}] {r.text}")
            if r.citation:
                print(f"      cited: {r.citation}")
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from ibex.policy_analysis import history_from_audit, simulate
    from ibex.policy_bundle import PolicyBundle

    since = _day(args.since, "--since") if args.since else None
    candidate = PolicyBundle.load(args.candidate)
    with broker_stores(args.broker_config) as stores:
        members = stores.federation()
        history = history_from_audit(stores.audit, since, members, stores.document_at)
        current = None
        if args.against_current:
            args.policies = None
            with _current_policies(args, stores) as policies:
                current = PolicyBundle.load(policies)
    report = simulate(history, candidate, current)
    if args.json:
        _print_json(report.to_json())
        return 0
    base = "the recorded decisions" if current is None else f"bundle {report.baseline}"
    print(f"Candidate {report.candidate_digest} against {base}:")
    print(f"{report.replayed} decision(s) replayed, {report.changed} would change.")
    if report.current_facts and current is None:
        print(
            f"{report.current_facts} decision(s) were rebuilt with today's member facts, not those "
            "they were decided under (no federation version recorded or kept): a change among "
            "them may be the federation's, not the policy's; --against-current shows the "
            "policy's alone."
        )
    if report.purged or report.skipped:
        print(
            f"Not replayed: {report.purged} audit entries purged after their retention period, "
            f"{report.skipped} decision(s) the policy did not make."
        )
    for g in report.groups:
        print(f"\n{g.partner}, {g.purpose}: {g.changed} of {g.replayed} would change")
        for count, text in (
            (g.newly_allowed, "newly allowed"),
            (g.newly_denied, "newly denied"),
            (g.fields_added, "would release more fields"),
            (g.fields_removed, "would release fewer fields"),
            (g.mode_changed, "would change mode"),
            (g.agreement_changed, "would be decided under another agreement"),
        ):
            if count:
                print(f"  {count} {text}")
        print(f"  e.g. queries {', '.join(g.examples)}")
    return 0


def _diff(args: argparse.Namespace) -> int:
    from ibex.policy_analysis import diff

    changes = diff(args.old, args.new)
    if args.json:
        _print_json([c.to_json() for c in changes])
        return 0
    mark = {"broader": "+", "narrower": "-", "neutral": "~"}
    for c in changes:
        print(f"{mark[c.effect]} {c.message}")
    if not changes:
        print("No difference in what the policies allow.")
    return 0


def _lifecycle(args: argparse.Namespace) -> int:
    with broker_stores(args.broker_config) as stores:
        store = stores.bundles
        if args.action == "list":
            records, history = store.list(), store.history()
            if args.json:
                _print_json({"bundles": [r.to_json() for r in records], "activations": history})
                return 0
            for r in records:
                who = f"proposed by {r.proposer}"
                who += f", reviewed by {r.reviewer}" if r.reviewer else ""
                who += f", activated by {r.activated_by}" if r.activated_by else ""
                print(
                    f"{r.status:9s}{r.digest}  {who}" + (f"\n         {r.note}" if r.note else "")
                )
            if not records:
                print("No bundle has been proposed; the broker decides with its policies_dir.")
            return 0
        if args.action == "propose":
            record = store.propose(args.source, officer=args.officer, note=args.note)
        elif args.action == "review":
            record = store.review(
                args.digest, officer=args.officer, approve=args.approve, note=args.note
            )
        elif args.action == "activate":
            record = store.activate(args.digest, officer=args.officer)
        else:
            record = store.rollback(args.digest, officer=args.officer)
    if args.json:
        _print_json(record.to_json())
    else:
        print(f"Bundle {record.digest} is now {record.status}.")
        if record.status == "proposed":
            print("A second legal officer must review it: ibex policy review … --approve")
        elif record.status == "approved":
            print("An officer other than the proposer may now activate it.")
    return 0
