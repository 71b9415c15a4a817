"""The ``ibex`` command: the one front door to the kernel, the broker and the connector.

Each command group lives in its own module with a ``register(subparsers)`` function that adds its
parsers and sets ``func`` (a callable taking the parsed arguments and returning an exit status).
This module is one of the two allowed to import ``ibex``, ``broker`` and ``connectors`` together.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ibex.errors import IbexError

# Command groups, in the order ``ibex --help`` lists them. Modules are imported lazily so that a
# quick command does not pay for Flask or the policy engine.
COMMAND_MODULES: tuple[str, ...] = (
    "ibex.cli_keys",
    "ibex.cli_schema",
    "ibex.cli_policy",
    "ibex.audit_cli",
    "ibex.cli_backup",
    "broker.cli",
    "broker.cli_users",
    "connectors.cli",
    "connectors.cli_query",
    "ibex.cli_partner",
    "ibex.demo",
)

EXIT_ERROR = 2

# Options whose value is an opaque token that may begin with "-" (a hit reference is random
# base64url, so one in 64 does): argparse would take such a value for an option of its own and
# refuse the command, so "--option VALUE" is handed to it as "--option=VALUE".
OPAQUE_VALUE_OPTIONS = frozenset({"--follow-up"})


def join_opaque_values(argv: Sequence[str]) -> list[str]:
    out: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg == "--":
            out.append(arg)
            out.extend(args)
            break
        value = next(args, None) if arg in OPAQUE_VALUE_OPTIONS else None
        out.append(arg if value is None else f"{arg}={value}")
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ibex",
        description="IBEX: privacy-preserving federated data exchange for border enforcement.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(join_opaque_values(sys.argv[1:] if argv is None else argv))
    try:
        return int(args.func(args))
    except IbexError as exc:
        print(f"ibex: {exc.diagnostics()}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `ibex schema fields person | head`
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
