"""``ibex broker``: set up, serve, and manage the members of a broker."""

from __future__ import annotations

import argparse
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey

from broker.members import DAY, MemberRegistry, MemberSpec
from broker.services import audit_origin
from ibex.auditentry import new_entry
from ibex.auditlog import AuditLog
from ibex.config import BrokerConfig, load_config
from ibex.errors import BadInput, KeyFileError
from ibex.keys import MemberKeys, load_public
from ibex.messages import AGENCY_KINDS
from ibex.serve import exec_gunicorn, gunicorn_argv
from ibex.store import generate_db_key_file, load_db_key, open_encrypted
from ibex.timeutil import format_ts, now, parse_ts

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
    _register_approve(msub)
    _register_keys(msub, bsub)


def _register_approve(msub: Any) -> None:
    ap = msub.add_parser("approve", help="verify a partner's signed join request and register it")
    ap.add_argument("request", type=Path, help="the join request (ibex partner request-join)")
    ap.add_argument("--config", required=True, type=Path)
    ap.add_argument(
        "--no-conformance",
        action="store_true",
        help="approve without passing conformance reports (recorded as waived in the audit log)",
    )
    ap.add_argument(
        "--signing-keyid", help="the signing key id the partner confirmed out of band (checked)"
    )
    ap.add_argument("--max-age-days", type=float, default=30.0, help="oldest request accepted")
    ap.add_argument(
        "--report-max-age-days", type=float, default=30.0, help="oldest conformance report"
    )
    ap.add_argument("--actor", default="operator", help="operator pseudonym for the audit log")
    ap.set_defaults(func=_member_approve)


def _register_keys(msub: Any, bsub: Any) -> None:
    rk = msub.add_parser("rotate-key", help="give a member new keys, the old ones overlapping")
    rk.add_argument("--config", required=True, type=Path)
    rk.add_argument("--member", required=True)
    rk.add_argument("--public-keys", required=True, type=Path, help="the new MEMBER.public.json")
    rk.add_argument("--overlap-days", required=True, type=float, help="how long old keys stay")
    rk.add_argument("--actor", default="operator")
    rk.set_defaults(func=_member_rotate)

    rv = msub.add_parser("revoke-key", help="revoke a member key from a moment on")
    rv.add_argument("--config", required=True, type=Path)
    rv.add_argument("--member", required=True)
    rv.add_argument("--keyid", required=True)
    rv.add_argument("--at", help="RFC 3339 UTC time of the revocation (default: now)")
    rv.add_argument("--actor", default="operator")
    rv.set_defaults(func=_member_revoke)

    br = bsub.add_parser("rotate-key", help="rotate the broker's own signing key with an overlap")
    br.add_argument("--config", required=True, type=Path)
    br.add_argument("--overlap-days", required=True, type=float)
    br.add_argument("--actor", default="operator")
    br.set_defaults(func=_broker_rotate)


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


RETIRED = "retired"


def retired_keys(config: BrokerConfig) -> list[SigningKey]:
    """Earlier broker signing keys kept by ``rotate-key`` (``keys_dir/retired/<keyid>/``); the
    registry uses those still inside their overlap to co-sign the federation document."""
    out: list[SigningKey] = []
    root = config.keys_dir / RETIRED
    if root.is_dir():
        for sub in sorted(root.iterdir()):
            if sub.is_dir():
                out.append(MemberKeys.load(sub, config.broker_id).signing_key)
    return out


def _open(config_path: Path) -> tuple[BrokerConfig, MemberRegistry, AuditLog]:
    config = load_config(BrokerConfig, config_path)
    key = load_db_key(config.db_key_file, config.db_key_env)
    keys = MemberKeys.load(config.keys_dir, config.broker_id)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    conn = open_encrypted(config.data_dir / "broker.db", key, create=True)
    registry = MemberRegistry(
        conn,
        keys,
        federation=config.federation,
        endpoint=config.url,
        previous_broker_keys=retired_keys(config),
    )
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
        _audit(
            audit,
            config,
            "operator",
            public.member,
            {"action": "add", "federation_version": version},
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
        details = {"action": args.status, "federation_version": version}
        _audit(audit, config, "operator", args.member, details)
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


def _audit(
    audit: AuditLog,
    config: BrokerConfig,
    actor: str,
    target: str | None,
    details: Mapping[str, Any],
) -> None:
    fields: dict[str, Any] = {"actor": actor, "details": dict(details)}
    if target is not None:
        fields["target"] = target
    audit.append(new_entry("membership", retention_days=config.audit_retention_days, **fields))


def _member_approve(args: argparse.Namespace) -> int:
    from broker.onboarding import JoinRefused, approve, check_join_request
    from ibex.canonical import digest_bytes

    config, registry, audit = _open(args.config)
    try:
        try:
            data = args.request.read_bytes()
        except OSError as exc:
            raise BadInput(f"cannot read {args.request}: {exc.strerror}") from None
        try:
            checked = check_join_request(
                data,
                federation=config.federation,
                require_conformance=not args.no_conformance,
                max_age_days=args.max_age_days,
                report_max_age_days=args.report_max_age_days,
                expected_keyid=args.signing_keyid,
            )
            version = approve(
                registry,
                checked,
                lambda kind, target, details: _audit(audit, config, args.actor, target, details),
            )
        except JoinRefused as exc:
            refused = {"action": "join-refused", "request_digest": digest_bytes(data)}
            _audit(audit, config, args.actor, None, {**refused, "code": exc.code})
            raise
        req = checked.request
        print(f"join request from {req.member} ({req.name}, {req.country}, {req.agency_kind})")
        print(f"  signing key id:    {checked.public.signing_keyid}")
        print(f"  encryption key id: {checked.public.encryption_keyid}")
        for report, _ in checked.reports:
            print(f"  conformance: {report.entity_type} {report.schema_version} passed")
        if checked.conformance_waived:
            print("  conformance: WAIVED by the operator (recorded in the audit log)")
        print(f"approved {req.member}; federation document version {version}")
    finally:
        audit.close()
    return 0


def _member_rotate(args: argparse.Namespace) -> int:
    config, registry, audit = _open(args.config)
    try:
        public = load_public(args.public_keys)
        member = registry.rotate_member_keys(
            args.member, public, overlap_seconds=args.overlap_days * DAY
        )
        version = registry.document().version
        ends = format_ts(now() + args.overlap_days * DAY)
        _audit(
            audit,
            config,
            args.actor,
            member.id,
            {
                "action": "rotate-key",
                "signing_keyid": public.signing_keyid,
                "encryption_keyid": public.encryption_keyid,
                "overlap_until": ends,
                "federation_version": version,
            },
        )
        print(f"{member.id}: new keys {public.signing_keyid} (signing), ")
        print(f"  {public.encryption_keyid} (encryption); old keys valid until {ends}")
        print(f"federation document version {version}")
    finally:
        audit.close()
    return 0


def _member_revoke(args: argparse.Namespace) -> int:
    config, registry, audit = _open(args.config)
    try:
        at = parse_ts(args.at, what="--at") if args.at else now()
        member = registry.revoke_key(args.member, args.keyid, at=at)
        version = registry.document().version
        _audit(
            audit,
            config,
            args.actor,
            member.id,
            {
                "action": "revoke-key",
                "keyid": args.keyid,
                "revoked_at": format_ts(at),
                "federation_version": version,
            },
        )
        left = [
            k.keyid
            for k in member.keys
            if k.use == "signing" and k.revoked_at is None and k.keyid != args.keyid
        ]
        print(f"{member.id}: key {args.keyid} revoked from {format_ts(at)}")
        if not left:
            print(f"  {member.id} has no other signing key: it cannot sign until it rotates")
        print(f"federation document version {version}")
    finally:
        audit.close()
    return 0


def _broker_rotate(args: argparse.Namespace) -> int:
    """New broker key: staged in ``keys_dir/next``, published (the document signed by both),
    then swapped in, the old key moving to ``keys_dir/retired/<keyid>``. Restart the broker
    within the overlap so that it signs with the new key."""
    import shutil

    config, registry, audit = _open(args.config)
    try:
        old = MemberKeys.load(config.keys_dir, config.broker_id)
        staging = config.keys_dir / "next"
        if staging.exists():
            raise KeyFileError(f"{staging} exists: an earlier rotation did not finish")
        new = MemberKeys.generate(config.broker_id)
        new.save(staging)
        doc = registry.rotate_broker_key(new, overlap_seconds=args.overlap_days * DAY)
        retired = config.keys_dir / RETIRED / old.signing_keyid
        retired.mkdir(parents=True, mode=0o700)
        for src, dst in zip(
            MemberKeys.paths(config.keys_dir, config.broker_id),
            MemberKeys.paths(retired, config.broker_id),
            strict=True,
        ):
            shutil.move(src, dst)
        for src, dst in zip(
            MemberKeys.paths(staging, config.broker_id),
            MemberKeys.paths(config.keys_dir, config.broker_id),
            strict=True,
        ):
            shutil.move(src, dst)
        staging.rmdir()
        ends = format_ts(now() + args.overlap_days * DAY)
        _audit(
            audit,
            config,
            args.actor,
            None,
            {
                "action": "broker-rotate-key",
                "old_keyid": old.signing_keyid,
                "new_keyid": new.signing_keyid,
                "overlap_until": ends,
                "federation_version": doc.version,
            },
        )
        print(f"broker key {old.signing_keyid} -> {new.signing_keyid}; old key valid until {ends}")
        print(f"federation document version {doc.version}, signed by both keys")
        print("restart the broker within the overlap; give members the new public key:")
        print(f"  {MemberKeys.paths(config.keys_dir, config.broker_id)[2]}")
    finally:
        audit.close()
    return 0
