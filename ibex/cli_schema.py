"""``ibex schema``: list the shared schemas, validate documents, check schema changes."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ibex.errors import SchemaValidationError
from ibex.jsonio import loads_strict


def register(sub: Any) -> None:
    p = sub.add_parser("schema", help="list shared schemas, validate documents")
    ssub = p.add_subparsers(dest="schema_command", metavar="ACTION", required=True)

    ls = ssub.add_parser("list", help="list entity types and every schema id")
    ls.set_defaults(func=_list)

    v = ssub.add_parser("validate", help="validate JSON documents against a schema")
    v.add_argument("--type", required=True, help="schema name, e.g. person or messages/query")
    v.add_argument("files", nargs="+", type=Path)
    v.set_defaults(func=_validate)

    f = ssub.add_parser("fields", help="an entity's fields with sensitivity and description")
    f.add_argument("entity")
    f.set_defaults(func=_fields)

    c = ssub.add_parser(
        "check",
        help="classify a schema change as compatible (minor) or breaking (major); exit 1 on "
        "breaking or on a version bump that does not match",
    )
    c.add_argument("old", type=Path, help="the old schema file or directory")
    c.add_argument("new", type=Path, help="the new schema file or directory")
    c.add_argument("--json", action="store_true", help="print the result as JSON")
    c.set_defaults(func=_check)


def _list(args: argparse.Namespace) -> int:
    from ibex.schemas import registry

    reg = registry()
    print("entity types:")
    for name, version in sorted(reg.entity_types().items()):
        print(f"  {name:<16} {version}")
    print("schemas:")
    for sid in reg.schema_ids():
        print(f"  {sid}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from ibex.schemas import registry

    reg = registry()
    failed = 0
    for path in args.files:
        try:
            reg.validate(loads_strict(path.read_bytes(), what=str(path)), args.type)
        except SchemaValidationError as exc:
            failed += 1
            print(f"{path}: invalid")
            for e in exc.errors:
                print(f"  {e.pointer or '/'}: {e.message}")
        else:
            print(f"{path}: valid")
    return 1 if failed else 0


def _fields(args: argparse.Namespace) -> int:
    from ibex.schemas import registry

    for name, info in sorted(registry().annotations(args.entity).items()):
        print(f"{name:<32} {info.sensitivity:<8} {info.description}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from ibex.jsonio import dumps
    from ibex.schema_compat import check_paths

    result = check_paths(args.old, args.new)
    print(dumps(result.to_json()).decode() if args.json else result.to_text())
    return 1 if result.breaking or not result.versions_ok else 0
