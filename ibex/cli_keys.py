"""``ibex keys``: generate and inspect member keys and database keys."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ibex.jsonio import dumps
from ibex.keys import MemberKeys, load_public
from ibex.store import generate_db_key_file


def register(sub: Any) -> None:
    p = sub.add_parser("keys", help="generate and inspect member keys")
    ksub = p.add_subparsers(dest="keys_command", metavar="ACTION", required=True)

    g = ksub.add_parser("generate", help="generate a member's Ed25519 and X25519 key pair")
    g.add_argument("--member", required=True, help="member id, e.g. CA-CBSA")
    g.add_argument("--out", required=True, type=Path, help="directory for the key files")
    g.add_argument("--force", action="store_true", help="overwrite existing key files")
    g.set_defaults(func=_generate)

    d = ksub.add_parser("db-key", help="generate a random key for an encrypted store")
    d.add_argument("--out", required=True, type=Path, help="key file to write (mode 0600)")
    d.add_argument("--force", action="store_true", help="overwrite an existing key file")
    d.set_defaults(func=_db_key)

    s = ksub.add_parser("show", help="print a member's public keys and key ids")
    s.add_argument("public_file", type=Path, help="a MEMBER.public.json file")
    s.set_defaults(func=_show)


def _generate(args: argparse.Namespace) -> int:
    keys = MemberKeys.generate(args.member)
    paths = keys.save(args.out, overwrite=args.force)
    for path in paths:
        print(f"wrote {path}")
    print(f"signing key id:    {keys.public.signing_keyid}")
    print(f"encryption key id: {keys.public.encryption_keyid}")
    return 0


def _db_key(args: argparse.Namespace) -> int:
    path = generate_db_key_file(args.out, overwrite=args.force)
    print(f"wrote {path}")
    return 0


def _show(args: argparse.Namespace) -> int:
    print(dumps(load_public(args.public_file).to_json()).decode())
    return 0
