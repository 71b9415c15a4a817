"""Run an IBEX application under gunicorn with the shared ``deploy/gunicorn.conf.py``."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from ibex.errors import ConfigError

DEPLOY_DIR = Path(__file__).resolve().parent.parent / "deploy"
GUNICORN_CONF = DEPLOY_DIR / "gunicorn.conf.py"


def gunicorn_argv(
    app: str, *, host: str, port: int, workers: int | None = None, name: str = "ibex"
) -> list[str]:
    """The command line that serves ``app`` (a ``module:factory()`` spec)."""
    exe = shutil.which("gunicorn", path=str(Path(sys.executable).parent)) or shutil.which(
        "gunicorn"
    )
    if exe is None:
        raise ConfigError("gunicorn is not installed in this environment")
    if not GUNICORN_CONF.is_file():
        raise ConfigError(f"gunicorn configuration {GUNICORN_CONF} is missing")
    argv = [exe, "-c", str(GUNICORN_CONF), "--bind", f"{host}:{port}", "--name", name]
    if workers is not None:
        argv += ["--workers", str(workers)]
    return [*argv, app]


def exec_gunicorn(argv: list[str], env: dict[str, str]) -> None:
    """Replace this process with gunicorn (so signals reach it directly)."""
    os.execve(argv[0], argv, {**os.environ, **env})  # noqa: S606 - argv is built above
