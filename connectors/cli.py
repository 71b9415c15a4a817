"""``ibex connector``: the agency connector's commands.

Each subcommand is one ``_register_<name>(actions)`` function listed in :data:`SUBCOMMANDS`;
adding ``serve`` or ``selftest`` is a new function and one more entry.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_REJECTED = 1
RECORDS_DB = "records.db"


def register(sub: Any) -> None:
    parser = sub.add_parser("connector", help="run and load an agency connector")
    actions = parser.add_subparsers(dest="connector_command", metavar="ACTION", required=True)
    for add in SUBCOMMANDS:
        add(actions)


def records_path(config: Any) -> Path:
    """Where the connector's encrypted record store lives."""
    return Path(config.data_dir) / RECORDS_DB


def _load_config(path: Path) -> Any:
    from ibex.config import ConnectorConfig, load_config

    return load_config(ConnectorConfig, path)


# --- import ----------------------------------------------------------------------------------


def _register_import(actions: Any) -> None:
    from connectors.importer import FORMATS

    p = actions.add_parser(
        "import",
        help="load records from CSV, JSON or NDJSON into the encrypted store (all or nothing)",
    )
    p.add_argument("--config", required=True, type=Path, help="connector configuration (TOML)")
    p.add_argument("file", type=Path, help="the file to import")
    p.add_argument("--type", required=True, dest="entity_type", help="entity type, e.g. person")
    p.add_argument("--mapping", type=Path, help="YAML mapping from local fields to the schema")
    p.add_argument("--format", choices=FORMATS, help="file format (default: from the suffix)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    bar = p.add_mutually_exclusive_group()
    bar.add_argument("--progress", action="store_true", default=None, help="always show progress")
    bar.add_argument("--no-progress", dest="progress", action="store_false", help="never show it")
    p.set_defaults(func=_import)


def _import(args: argparse.Namespace) -> int:
    from connectors.importer import import_file
    from connectors.mapping import load_mapping
    from connectors.records import RecordStore
    from ibex.jsonio import dumps
    from ibex.store import load_db_key

    config = _load_config(args.config)
    mapping = load_mapping(args.mapping) if args.mapping else None
    if not args.file.is_file():
        from ibex.errors import BadInput

        raise BadInput(f"{args.file} is not a readable file")
    key = load_db_key(config.db_key_file, config.db_key_env)
    path = records_path(config)
    if not path.parent.exists():
        path.parent.mkdir(parents=True)
        os.chmod(path.parent, 0o700)  # records are personal data: owner only
    store = RecordStore.open_or_create(path, key)
    try:
        report = import_file(
            store,
            args.file,
            args.entity_type,
            fmt=args.format,
            mapping=mapping,
            progress=args.progress,
        )
    finally:
        store.close()
    if args.json:
        print(dumps(report.to_json()).decode())
    else:
        print(report.to_text(), file=sys.stdout if report.accepted else sys.stderr)
    return EXIT_OK if report.accepted else EXIT_REJECTED


SUBCOMMANDS: tuple[Callable[[Any], None], ...] = (_register_import,)


# --- serve -----------------------------------------------------------------------------------


def _register_serve(actions: Any) -> None:
    p = actions.add_parser("serve", help="run the connector (provider and gateway) under gunicorn")
    p.add_argument("--config", required=True, type=Path, help="connector configuration (TOML)")
    p.add_argument("--workers", type=int, help="gunicorn worker processes")
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from ibex.serve import exec_gunicorn, gunicorn_argv

    config = _load_config(args.config)
    argv = gunicorn_argv(
        "connectors.wsgi:create()",
        host=config.host,
        port=config.port,
        workers=args.workers,
        name=f"ibex-connector-{config.member_id}",
    )
    exec_gunicorn(argv, {"IBEX_CONNECTOR_CONFIG": str(args.config.resolve())})
    return EXIT_OK  # pragma: no cover - exec does not return


def _register_selftest(actions: Any) -> None:
    from connectors.cli_selftest import add_action

    add_action(actions)


SUBCOMMANDS = (*SUBCOMMANDS, _register_serve, _register_selftest)
