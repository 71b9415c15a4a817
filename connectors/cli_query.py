"""``ibex query``: ask partners from a terminal, through this agency's own gateway.

It reads the gateway's URL and bearer token from the connector's configuration and uses
:mod:`connectors.client`, so a terminal user goes through exactly the checks an agency system
does. Exit status: 0 when the broker answered (even if every partner denied), 1 when the gateway
or the broker refused the query, 2 on a usage or configuration error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from ibex.errors import IbexError
from ibex.messages import ENTITY_TYPES

if TYPE_CHECKING:
    from connectors.client import QueryResult, TargetOutcome

EXIT_ANSWERED = 0
EXIT_REFUSED = 1


class UsageError(IbexError):
    code = "usage"
    status = 400
    title = "Usage error"


def register(sub: Any) -> None:
    p = sub.add_parser(
        "query",
        help="ask partners about a subject through this agency's gateway",
        description=(
            "Ask partners through this agency's connector (gateway role). "
            "Exit status: 0 answered (even with denials), 1 refused, 2 usage or configuration."
        ),
    )
    p.add_argument("--config", required=True, type=Path, help="this agency's connector TOML")
    p.add_argument("--officer", required=True, help="the officer's pseudonym")
    p.add_argument("--purpose", required=True, help="a purpose id, e.g. border_screening")
    p.add_argument("--legal-basis", required=True, help="a legal basis id, e.g. us_19_usc_1628")
    p.add_argument("--jurisdiction", required=True, help="where the officer acts, e.g. CA")
    p.add_argument(
        "--type", required=True, dest="subject_type", choices=ENTITY_TYPES, help="subject type"
    )
    p.add_argument(
        "--criteria",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="a match criterion, e.g. name.surname=Kovalenko (repeat for more)",
    )
    p.add_argument(
        "--request",
        action="append",
        default=[],
        metavar="FIELDS",
        help="fields wanted back, comma-separated, e.g. name,date_of_birth",
    )
    p.add_argument("--mode", choices=("hit_no_hit", "full"), default="hit_no_hit")
    p.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="MEMBER",
        help="a partner to ask (repeat; default: every partner serving the type)",
    )
    p.add_argument("--case-reference", help="the case this query belongs to")
    p.add_argument("--seriousness", choices=("none", "minor", "serious", "very_serious"))
    p.add_argument(
        "--follow-up",
        metavar="REFERENCE",
        help="ask for the record behind a hit reference (with exactly one --target)",
    )
    p.add_argument("--previous-query-id", help="the query that returned the hit reference")
    p.add_argument(
        "--confirm",
        action="store_true",
        help="the officer confirms the hit is the subject (follow-ups need it)",
    )
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the answer")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=_query)


def parse_criteria(items: Sequence[str]) -> dict[str, str]:
    """``FIELD=VALUE`` pairs; the value may itself contain ``=``. A field given twice is an
    error rather than a silent overwrite."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            # The value is not echoed back: it may be personal data bound for a shared log.
            raise UsageError("--criteria takes FIELD=VALUE, e.g. name.surname=Kovalenko")
        if name in out:
            raise UsageError(f"--criteria {name} is given twice")
        out[name] = value
    return out


def parse_fields(items: Sequence[str]) -> list[str]:
    fields = [f.strip() for item in items for f in item.split(",") if f.strip()]
    return sorted(set(fields))


def _query(args: argparse.Namespace) -> int:
    from connectors.client import GatewayClient, QueryRefused, QueryRequest
    from ibex.config import ConnectorConfig, load_config
    from ibex.errors import ConfigError
    from ibex.keys import read_secret_file

    config = load_config(ConnectorConfig, args.config)
    if config.gateway_token_file is None:
        raise ConfigError(f"{args.config} names no gateway_token_file: the gateway is disabled")
    token = read_secret_file(config.gateway_token_file, what="gateway token file").decode()
    requested = parse_fields(args.request)
    if args.follow_up is not None:
        if len(args.target) != 1:
            raise UsageError("--follow-up needs exactly one --target: the partner that hit")
        if args.criteria:
            raise UsageError("--follow-up sends only the reference; leave out --criteria")
    elif not args.criteria:
        raise UsageError("give at least one --criteria FIELD=VALUE (or --follow-up REFERENCE)")
    criteria = parse_criteria(args.criteria)
    try:
        with GatewayClient(config.url, token, timeout=args.timeout) as gateway:
            if args.follow_up is not None:
                request = QueryRequest(
                    officer=args.officer,
                    purpose=args.purpose,
                    legal_basis=args.legal_basis,
                    jurisdiction=args.jurisdiction,
                    subject_type=args.subject_type,
                    requested_fields=tuple(requested),
                    case_reference=args.case_reference,
                    seriousness=args.seriousness,
                )
                result = gateway.follow_up_reference(
                    args.follow_up,
                    target=args.target[0],
                    officer_confirmed=args.confirm,
                    request=request,
                    previous_query_id=args.previous_query_id,
                )
            else:
                result = gateway.query(
                    officer=args.officer,
                    purpose=args.purpose,
                    legal_basis=args.legal_basis,
                    jurisdiction=args.jurisdiction,
                    subject_type=args.subject_type,
                    criteria=criteria,
                    requested_fields=requested,
                    mode=args.mode,
                    targets=args.target or None,
                    case_reference=args.case_reference,
                    seriousness=args.seriousness,
                )
    except QueryRefused as exc:
        if args.json:
            _print_json(
                {
                    "refused": {
                        "by": exc.refused_by,
                        "status": exc.http_status,
                        "code": exc.problem_code,
                        "detail": exc.detail,
                        "query_id": exc.query_id,
                        "errors": [e.to_json() for e in exc.errors],
                    }
                },
                sys.stdout,
            )
        print(f"ibex: {exc.diagnostics()}", file=sys.stderr)
        return EXIT_REFUSED
    if args.json:
        _print_json(result.to_json(), sys.stdout)
    else:
        render(result, sys.stdout)
    return EXIT_ANSWERED


def _print_json(doc: Any, out: TextIO) -> None:
    from ibex.jsonio import dumps

    print(dumps(doc).decode(), file=out)


# --- the readable table ------------------------------------------------------------------------


def render(result: QueryResult, out: TextIO) -> None:
    """A summary table (one line a partner), then each partner's reasons and results."""
    print(f"query {result.query_id}", file=out)
    print(f"policy {result.policy_digest}", file=out)
    rows = [("TARGET", "STATUS", "AGENCY", "AGREEMENT", "HANDLING", "RESULTS")]
    rows.extend(_row(r) for r in result.results)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print(file=out)
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(), file=out)
    for r in result.results:
        print(file=out)
        print(f"{r.target} — {r.agency}: {r.status}", file=out)
        for line in _details(r):
            print(f"  {line}", file=out)


def _row(r: TargetOutcome) -> tuple[str, str, str, str, str, str]:
    d = r.decision
    if r.records:
        found = f"{len(r.records)} record{'s' if len(r.records) != 1 else ''}"
    elif r.hits:
        found = f"{len(r.hits)} hit{'s' if len(r.hits) != 1 else ''}"
    elif r.answered:
        found = "no match"
    else:
        found = "-"
    return (
        r.target,
        r.status,
        r.agency,
        (d.agreement if d and d.agreement else "-"),
        (d.handling if d and d.handling else "-"),
        found,
    )


def _details(r: TargetOutcome) -> Iterator[str]:
    if r.verification and r.verification != "not applicable":
        yield f"verification: {r.verification}"
    d = r.decision
    if d is not None:
        yield f"mode: {d.mode}; fields allowed: {', '.join(d.fields) or 'none'}"
        if d.withheld:
            yield f"withheld: {', '.join(d.withheld)}"
        if d.retention_days is not None:
            yield f"retention: {d.retention_days} days"
        for reason in d.reasons:
            cite = f" ({reason.citation})" if reason.citation else ""
            yield f"reason [{reason.rule}] {reason.text}{cite}"
    if r.error is not None:
        yield f"error [{r.error.code}] {r.error.detail}"
    for i, rec in enumerate(r.records, 1):
        yield f"record {i}: handling {rec.handling}, score {rec.score:g}, {', '.join(rec.rules)}"
        for path, value in _flatten(rec.record):
            yield f"    {path}: {value}"
    for i, hit in enumerate(r.hits, 1):
        expires = f", expires {hit.expires_at}" if hit.expires_at else ""
        yield f"hit {i}: handling {hit.handling}, score {hit.score:g}{expires}"
        yield f"    reference: {hit.reference}"
        yield (
            f"    full record: --follow-up={hit.reference} --target {hit.target}"
            f" --previous-query-id {hit.query_id} --confirm"
        )


def _flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(value, Mapping):
        for k, v in value.items():
            yield from _flatten(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(value, list) and any(isinstance(v, Mapping | list) for v in value):
        for i, v in enumerate(value):
            yield from _flatten(v, f"{prefix}[{i}]")
    elif isinstance(value, list):
        yield prefix, ", ".join(str(v) for v in value)
    else:
        yield prefix, str(value)
