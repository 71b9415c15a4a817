"""``ibex broker-user``: add, list and disable the people who may log in to the web console."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import Any

from broker.users import COSTS, DEFAULT_COST, ROLES, UserStore
from ibex.config import BrokerConfig, load_config
from ibex.errors import BadInput
from ibex.keys import read_secret_file
from ibex.store import load_db_key, open_encrypted


def register(sub: Any) -> None:
    p = sub.add_parser("broker-user", help="manage the broker web console's users")
    usub = p.add_subparsers(dest="user_command", metavar="ACTION", required=True)

    a = usub.add_parser("add", help="add a console user (asks for the password)")
    a.add_argument("--config", required=True, type=Path, help="the broker's broker.toml")
    a.add_argument("--name", required=True)
    a.add_argument("--role", required=True, choices=ROLES)
    a.add_argument(
        "--password-file",
        type=Path,
        help="read the password from this file (mode 0600) instead of asking for it",
    )
    a.add_argument(
        "--cost",
        choices=sorted(COSTS),
        default=DEFAULT_COST,
        help=f"Argon2id cost (default {DEFAULT_COST})",
    )
    a.set_defaults(func=_add)

    ls = usub.add_parser("list", help="list console users")
    ls.add_argument("--config", required=True, type=Path)
    ls.set_defaults(func=_list)

    d = usub.add_parser("disable", help="disable a console user and end their sessions")
    d.add_argument("--config", required=True, type=Path)
    d.add_argument("--name", required=True)
    d.set_defaults(func=_disable)


def _open(config_path: Path, cost: str = DEFAULT_COST) -> tuple[Any, UserStore]:
    config = load_config(BrokerConfig, config_path)
    key = load_db_key(config.db_key_file, config.db_key_env)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    conn = open_encrypted(config.data_dir / "broker.db", key, create=True)
    return conn, UserStore(conn, cost=cost)


def _password(args: argparse.Namespace) -> str:
    if args.password_file is not None:
        data = read_secret_file(args.password_file, what="password file", max_bytes=4096)
        return data.decode("utf-8").rstrip("\r\n")
    if not sys.stdin.isatty():
        raise BadInput("no terminal to ask for the password on: use --password-file")
    first = getpass.getpass(f"password for {args.name}: ")
    if getpass.getpass("again: ") != first:
        raise BadInput("the two passwords differ")
    return first


def _add(args: argparse.Namespace) -> int:
    password = _password(args)
    conn, users = _open(args.config, args.cost)
    try:
        user = users.add(args.name, args.role, password)
    finally:
        conn.close()
    print(f"added console user {user.name} ({user.role})")
    return 0


def _list(args: argparse.Namespace) -> int:
    conn, users = _open(args.config)
    try:
        for u in users.list():
            print(f"{u.name:<24} {u.role:<14} {'disabled' if u.disabled else 'active'}")
    finally:
        conn.close()
    return 0


def _disable(args: argparse.Namespace) -> int:
    conn, users = _open(args.config)
    try:
        users.disable(args.name)
    finally:
        conn.close()
    print(f"disabled console user {args.name}; their sessions are closed")
    return 0
