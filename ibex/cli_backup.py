"""``ibex backup`` and ``ibex restore``: consistent, verified copies of a data directory."""

from __future__ import annotations

import argparse
import os
import tomllib
from pathlib import Path
from typing import Any

from ibex.backup import AnyConfig, backup, restore
from ibex.config import BrokerConfig, ConnectorConfig, load_config
from ibex.errors import ConfigError

KINDS = ("auto", "broker", "connector")


def register(sub: Any) -> None:
    b = sub.add_parser(
        "backup",
        help="copy a broker's or connector's encrypted stores online and verify the copy",
    )
    _common(b)
    b.add_argument("--out", required=True, type=Path, help="new or empty backup directory")
    b.set_defaults(func=_backup)

    r = sub.add_parser(
        "restore", help="replace a stopped server's data directory with a verified backup"
    )
    _common(r)
    r.add_argument("--from", dest="source", required=True, type=Path, help="backup directory")
    r.add_argument(
        "--force",
        action="store_true",
        help="replace a data directory that already holds stores (it is kept, renamed)",
    )
    r.set_defaults(func=_restore)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, type=Path, help="the server's TOML configuration")
    p.add_argument(
        "--kind",
        choices=KINDS,
        default="auto",
        help="broker or connector (default: a configuration with member_id is a connector)",
    )


def load_any(path: Path, kind: str = "auto") -> AnyConfig:
    """The broker or connector configuration at ``path`` (plus ``IBEX_*`` variables)."""
    if kind == "auto":
        try:
            keys = set(tomllib.loads(path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            keys = set()  # load_config below says what is wrong with the file
        connector = "member_id" in keys or "IBEX_MEMBER_ID" in os.environ
        kind = "connector" if connector else "broker"
    if kind == "connector":
        return load_config(ConnectorConfig, path)
    if kind == "broker":
        return load_config(BrokerConfig, path)
    raise ConfigError(f"--kind must be one of {', '.join(KINDS)}")


def _backup(args: argparse.Namespace) -> int:
    report = backup(load_any(args.config, args.kind), args.out)
    print(report.summary())
    return 0


def _restore(args: argparse.Namespace) -> int:
    report = restore(load_any(args.config, args.kind), args.source, force=args.force)
    print(
        f"restored {report.kind} data directory {report.directory} "
        f"({len(report.files)} file(s); audit log of {report.audit_size} entries verified)"
    )
    return 0
