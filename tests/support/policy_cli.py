"""Run ``ibex policy …`` in-process, for tests that check its exit code and output."""

from __future__ import annotations

import argparse
import io
from contextlib import redirect_stdout

from ibex import cli_policy
from ibex.errors import IbexError


def run_cli(*argv: str) -> tuple[int, str]:
    """``ibex policy …`` through its own parser, as ``ibex.cli.main`` runs it."""
    parser = argparse.ArgumentParser(prog="ibex")
    cli_policy.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    buf = io.StringIO()
    with redirect_stdout(buf):
        try:
            code = int(args.func(args))
        except IbexError as exc:
            print(exc.diagnostics())
            code = 2
    return code, buf.getvalue()
