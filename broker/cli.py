"""``ibex broker``: set up, serve, and manage the members of a broker."""

from __future__ import annotations

import argparse
import secrets
from pathlib import Path
from typing import Any

from broker.members import AGENCY_KINDS, MemberRegistry, MemberSpec
from broker.services import audit_origin
from ibex.auditentry import new_entry
from ibex.auditlog import AuditLog
from ibex.config import BrokerConfig, load_config
from ibex.keys import MemberKeys, load_public
from ibex.serve import exec_gunicorn, gunicorn_argv
from ibex.store import generate_db_key_file, load_db_key, open_encrypted

DEFAULT_POLICIES = Path(__file__).resolve().parent.parent / "policies"


def register(sub: Any) -> None:
    p = sub.add_parser("broker", help="set up and run the central broker, manage members")
    bsub = p.add_subparsers(dest="broker_command", metavar="ACTION", required=True)

    i = bsub.add_parser("init", help="create keys, a database key and a configuration")
    i.add_argument("--dir", required=True, type=Path, help="the broker's directory")
    i.add_argument("--port", type=int, default=8400)
    i.add_argument("--broker-id", default="IBEX-BROKER")
    i.add_argument("--federation", default="ibex")
    i.add_argument("--policies", type=Path, default=DEFAULT_POLICIES)
    i.set_defaults(func=_init)

    s = bsub.add_parser("serve", help="run the broker under gunicorn")
    s.add_argument("--config", required=True, type=Path)
    s.add_argument("--workers", type=int, help="gunicorn worker processes")
    s.set_defaults(func=_serve)

    m = bsub.add_parser("member", help="add, suspend, reactivate and list members")
    msub = m.add_subparsers(dest="member_command", metavar="ACTION", required=True)
    a = msub.add_parser("add", help="register a member (re-signs the federation document)")
    a.add_argument("--config", required=True, type=Path)
    a.add_argument("--public-keys", required=True, type=Path, help="MEMBER.public.json")
    a.add_argument("--name", required=True)
    a.add_argument("--country", required=True, help="ISO 3166-1 alpha-2")
    a.add_argument("--kind", required=True, choices=AGENCY_KINDS)
    a.add_argument("--jurisdictions", required=True, help="comma-separated, e.g. CA,US-WA")
    a.add_argument("--endpoint", required=True, help="the member connector's URL")
    a.add_argument(
        "--schemas", default="person=1.0", help="entity=version list, e.g. person=1.0,vessel=1.0"
    )
    a.set_defaults(func=_member_add)
    for action, status in (("suspend", "suspended"), ("activate", "active")):
        x = msub.add_parser(action, help=f"mark a member {status}")
        x.add_argument("--config", required=True, type=Path)
        x.add_argument("member")
        x.set_defaults(func=_member_status, status=status)
    ls = msub.add_parser("list", help="list members")
    ls.add_argument("--config", required=True, type=Path)
    ls.set_defaults(func=_member_list)


def _init(args: argparse.Namespace) -> int:
    root: Path = args.dir.resolve()
    keys_dir = root / "keys"
    MemberKeys.generate(args.broker_id).save(keys_dir)
    generate_db_key_file(keys_dir / "broker.db.key")
    token = keys_dir / "oversight.token"
    _write_secret(token, secrets.token_urlsafe(32))
    config = root / "broker.toml"
    config.write_text(
        f'broker_id = "{args.broker_id}"\n'
        f'federation = "{args.federation}"\n'
        f'data_dir = "{root / "data"}"\n'
        f'keys_dir = "{keys_dir}"\n'
        f'db_key_file = "{keys_dir / "broker.db.key"}"\n'
        f'oversight_token_file = "{token}"\n'
        f'policies_dir = "{args.policies.resolve()}"\n'
        f"port = {args.port}\n"
    )
    print(f"wrote {config}")
    return 0


def _write_secret(path: Path, text: str) -> None:
    import os

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, text.encode() + b"\n")
    finally:
        os.close(fd)


def _serve(args: argparse.Namespace) -> int:
    config = load_config(BrokerConfig, args.config)
    argv = gunicorn_argv(
        "broker.wsgi:create()",
        host=config.host,
        port=config.port,
        workers=args.workers,
        name=f"ibex-broker-{config.broker_id}",
    )
    exec_gunicorn(argv, {"IBEX_BROKER_CONFIG": str(args.config.resolve())})
    return 0  # pragma: no cover - exec does not return


def _open(config_path: Path) -> tuple[BrokerConfig, MemberRegistry, AuditLog]:
    config = load_config(BrokerConfig, config_path)
    key = load_db_key(config.db_key_file, config.db_key_env)
    keys = MemberKeys.load(config.keys_dir, config.broker_id)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    conn = open_encrypted(config.data_dir / "broker.db", key, create=True)
    registry = MemberRegistry(conn, keys, federation=config.federation, endpoint=config.url)
    audit = AuditLog(
        config.data_dir / "audit.db",
        key,
        origin=audit_origin(config),
        signing_key=keys.signing_key,
        create=True,
    )
    return config, registry, audit


def _member_add(args: argparse.Namespace) -> int:
    config, registry, audit = _open(args.config)
    try:
        public = load_public(args.public_keys)
        schemas: dict[str, tuple[str, ...]] = {}
        for item in filter(None, args.schemas.split(",")):
            entity, _, version = item.partition("=")
            schemas.setdefault(entity.strip(), ())
            schemas[entity.strip()] += (version.strip() or "1.0",)
        spec = MemberSpec(
            id=public.member,
            name=args.name,
            country=args.country,
            agency_kind=args.kind,
            jurisdictions=tuple(j.strip() for j in args.jurisdictions.split(",") if j.strip()),
            endpoint=args.endpoint,
            keys=public,
            schemas=schemas,
        )
        registry.add(spec)
        version = registry.document().version
        audit.append(
            new_entry(
                "membership",
                retention_days=config.audit_retention_days,
                actor="operator",
                target=public.member,
                details={"action": "add", "federation_version": version},
            )
        )
        print(f"added {public.member}; federation document version {version}")
    finally:
        audit.close()
    return 0


def _member_status(args: argparse.Namespace) -> int:
    config, registry, audit = _open(args.config)
    try:
        registry.set_status(args.member, args.status)
        version = registry.document().version
        audit.append(
            new_entry(
                "membership",
                retention_days=config.audit_retention_days,
                actor="operator",
                target=args.member,
                details={"action": args.status, "federation_version": version},
            )
        )
        print(f"{args.member} is {args.status}; federation document version {version}")
    finally:
        audit.close()
    return 0


def _member_list(args: argparse.Namespace) -> int:
    _, registry, audit = _open(args.config)
    audit.close()
    for m in registry.list():
        schemas = ",".join(f"{k}={'/'.join(v)}" for k, v in sorted(m.schemas.items()))
        print(f"{m.id:<12} {m.status:<9} {m.agency_kind:<12} {m.endpoint:<28} {schemas}")
    return 0
