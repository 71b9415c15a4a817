"""``ibex connector selftest``: check a connector against the shared schemas, sign a report.

Registered as a top-level command (``connectors/cli.py`` belongs to another module owner);
:func:`add_action` lets ``ibex connector`` offer the same as ``ibex connector selftest`` with one
more entry in its ``SUBCOMMANDS``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_FAILED = 1


def register(sub: Any) -> None:
    add_action(sub)


def add_action(actions: Any) -> None:
    p = actions.add_parser(
        "selftest",
        help="validate mapping and sample against the shared schemas, run a loopback round trip",
    )
    p.add_argument("--config", required=True, type=Path, help="connector configuration (TOML)")
    p.add_argument("--type", required=True, dest="entity_type", help="entity type, e.g. person")
    p.add_argument("--sample", required=True, type=Path, help="sample records (CSV/JSON/NDJSON)")
    p.add_argument("--mapping", type=Path, help="YAML mapping from local fields to the schema")
    p.add_argument("--schema-version", help="the version to test (default: the registry's)")
    p.add_argument("--format", choices=("csv", "json", "ndjson"), help="sample file format")
    p.add_argument("--out", type=Path, help="write the signed report here")
    p.set_defaults(func=_selftest)


def _selftest(args: argparse.Namespace) -> int:
    from connectors.selftest import run_selftest
    from ibex.config import ConnectorConfig, load_config

    config = load_config(ConnectorConfig, args.config)
    result = run_selftest(
        config,
        entity_type=args.entity_type,
        sample=args.sample,
        mapping=args.mapping,
        schema_version=args.schema_version,
        fmt=args.format,
    )
    print(result.to_text(), file=sys.stdout if result.report.passed else sys.stderr)
    out: Path = args.out or args.config.resolve().parent / (f"conformance-{args.entity_type}.json")
    out.write_bytes(result.envelope.to_bytes() + b"\n")
    print(f"wrote the signed report to {out}")
    return EXIT_OK if result.report.passed else EXIT_FAILED
