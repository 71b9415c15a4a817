"""``ibex partner``: join a federation as a new partner (docs/PARTNER.md).

    ibex partner init --member DE-BPOL --dir bpol --name "Bundespolizei" --kind border \\
        --broker-url https://broker.example --broker-public-key IBEX-BROKER.public.json
    ibex connector selftest --config bpol/connector.toml --type person --sample persons.csv \\
        --mapping mapping.yaml --out bpol/conformance-person.json
    ibex partner request-join --dir bpol --conformance bpol/conformance-person.json
    ibex partner compat --dir bpol --agreements proposed/ [--broker-config broker.toml]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ibex.errors import BadInput


def register(sub: Any) -> None:
    p = sub.add_parser("partner", help="join a federation: keys, join request, compatibility")
    psub = p.add_subparsers(dest="partner_command", metavar="ACTION", required=True)

    i = psub.add_parser("init", help="keys and a connector configuration for a new partner")
    i.add_argument("--member", required=True, help="member id, e.g. DE-BPOL")
    i.add_argument("--dir", required=True, type=Path, help="the partner's directory")
    i.add_argument("--name", help="the agency's name (default: the member id)")
    i.add_argument("--country", help="ISO 3166-1 alpha-2 (default: from the member id)")
    i.add_argument("--kind", default="border", help="agency kind (border, police, customs, …)")
    i.add_argument("--jurisdictions", help="comma-separated (default: the country)")
    i.add_argument("--schemas", default="person=1.0", help="served, e.g. person=1.0,vessel=1.0")
    i.add_argument("--broker-url", default="http://127.0.0.1:8400")
    i.add_argument("--broker-public-key", type=Path, help="the broker's public key file")
    i.add_argument("--host", default="127.0.0.1")
    i.add_argument("--port", type=int, default=8500)
    i.add_argument("--endpoint", help="URL the broker reaches the connector at")
    i.add_argument("--federation", help="the federation's name (binds the join request to it)")
    i.add_argument("--contact", help="a role address the operator calls to confirm key ids")
    i.set_defaults(func=_init)

    r = psub.add_parser("request-join", help="write a join request signed with the partner key")
    r.add_argument("--dir", required=True, type=Path)
    r.add_argument(
        "--conformance",
        action="append",
        default=[],
        type=Path,
        help="a signed conformance report from `ibex connector selftest` (repeat per type)",
    )
    r.add_argument("--out", type=Path, help="where to write it (default: DIR/join-request.json)")
    r.set_defaults(func=_request_join)

    c = psub.add_parser("compat", help="how proposed agreements fit the federation's policies")
    c.add_argument("--dir", required=True, type=Path, help="the partner directory (its profile)")
    c.add_argument("--agreements", required=True, nargs="+", type=Path, help="proposed YAML")
    c.add_argument("--policies", type=Path, help="current policies (default: the broker's)")
    c.add_argument(
        "--broker-config", type=Path, help="broker.toml: replay its audit log (operator side)"
    )
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=_compat)


def _init(args: argparse.Namespace) -> int:
    from ibex.partner import PartnerProfile, init_partner, parse_schemas

    country = args.country or args.member.split("-")[0]
    profile = PartnerProfile(
        member=args.member,
        name=args.name or args.member,
        country=country,
        agency_kind=args.kind,
        jurisdictions=tuple(
            j.strip() for j in (args.jurisdictions or country).split(",") if j.strip()
        ),
        endpoint=args.endpoint or f"http://{args.host}:{args.port}",
        schemas=parse_schemas(args.schemas),
        federation=args.federation,
        contact=args.contact,
    )
    written = init_partner(
        args.dir,
        profile,
        broker_url=args.broker_url,
        broker_public_key=args.broker_public_key,
        host=args.host,
        port=args.port,
    )
    for path in written:
        print(f"wrote {path}")
    if args.broker_public_key is None:
        print(f"next: put the broker's public key in {args.dir / 'keys' / 'broker.public.json'}")
    print(
        f"next: ibex connector selftest --config {args.dir / 'connector.toml'} "
        "--type person --sample FILE"
    )
    return 0


def _request_join(args: argparse.Namespace) -> int:
    from ibex.envelope import Envelope
    from ibex.keys import MemberKeys
    from ibex.partner import PROFILE, PartnerProfile, build_join_request

    profile = PartnerProfile.load(args.dir / PROFILE)
    keys = MemberKeys.load(args.dir / "keys", profile.member)
    reports = []
    for path in args.conformance:
        try:
            reports.append(Envelope.parse(path.read_bytes()))
        except OSError as exc:
            raise BadInput(f"cannot read {path}: {exc.strerror}") from None
    env = build_join_request(profile, keys, reports)
    out: Path = args.out or args.dir / "join-request.json"
    out.write_bytes(env.to_bytes() + b"\n")
    print(f"wrote {out}")
    print(f"signing key id:    {keys.public.signing_keyid}")
    print(f"encryption key id: {keys.public.encryption_keyid}")
    print("send the file to the operator and confirm these key ids with them by another channel")
    return 0


def _compat(args: argparse.Namespace) -> int:
    from contextlib import ExitStack

    from ibex.cli_policy import DEFAULT_POLICIES, broker_stores
    from ibex.jsonio import dumps
    from ibex.onboarding import compatibility
    from ibex.partner import PROFILE, PartnerProfile, partner_facts
    from ibex.policy_analysis import history_from_audit

    profile = PartnerProfile.load(args.dir / PROFILE)
    with ExitStack() as stack:
        members: list[Any] = []
        history: Any = ()
        policies = args.policies
        if args.broker_config is not None:
            stores = stack.enter_context(broker_stores(args.broker_config))
            doc = stores.federation()
            members = list(doc.members)
            history = history_from_audit(stores.audit, members=doc)
            policies = policies or Path(stores.config.policies_dir)
        report = compatibility(
            policies or DEFAULT_POLICIES,
            args.agreements,
            partner=partner_facts(profile),
            members=members,
            history=history,
        )
    print(dumps(report.to_json()).decode() if args.json else report.to_text())
    return 1 if report.never_satisfiable else 0
