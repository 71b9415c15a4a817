"""Structured JSON logs that cannot carry personal data.

One JSON object per line: time, level, logger, the message *template*, the request id and query id
when known, and a short list of allowed extra fields. What is never written:

- message arguments, unless every one is a number (a pid, a count): ``log.info("no match for
  %s", name)`` logs ``"no match for %s"`` and ``"args_dropped": true``;
- extra fields outside :data:`ALLOWED_EXTRA`;
- exception messages and source lines — an exception is its type and its frames
  (``file:line function``), because an exception's text may quote the value that caused it.

gunicorn's access log is reduced to the method, the path without its query string, the status,
the size, the duration and the request id. ``deploy/gunicorn.conf.py`` installs this formatter
for every logger through :data:`LOGCONFIG`.
"""

from __future__ import annotations

import json
import logging
import re
import time
import traceback
from typing import Any

ALLOWED_EXTRA = frozenset(
    {
        "request_id",
        "query_id",
        "member",
        "partner",
        "purpose",
        "stage",
        "status",
        "code",
        "error_type",
        "count",
        "duration_ms",
        "targets",
        "answered",
        "denied",
        "failed",
    }
)
_UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_RID_RE = re.compile(r"[0-9A-Za-z-]{1,64}")
_ACCESS_ATOMS = {"m": "method", "U": "path", "s": "status", "B": "bytes", "M": "duration_ms"}
_RESERVED = frozenset(vars(logging.makeLogRecord({})))
# gunicorn's own messages (never a request body) may keep short, plain arguments: versions,
# addresses, worker classes, methods and paths (paths here never carry values).
_GUNICORN_ARG_RE = re.compile(r"[A-Za-z0-9_.:/\[\]'-]{0,100}")
# Chatty libraries whose debug lines are pre-formatted text: kept at WARNING and above.
QUIET_LOGGERS = ("httpcore", "httpx", "urllib3", "requests", "asyncio", "werkzeug")


def _context_ids() -> dict[str, str]:
    """The request id (and query id, once known) of the Flask request this thread serves."""
    try:
        from flask import g, has_request_context
    except ImportError:  # pragma: no cover - Flask is a dependency
        return {}
    if not has_request_context():
        return {}
    out: dict[str, str] = {}
    rid = g.get("request_id")
    if isinstance(rid, str):
        out["request_id"] = rid
    qid = g.get("query_id")
    if isinstance(qid, str):
        out["query_id"] = qid
    return out


def set_query_id(query_id: object) -> None:
    """Remember the query id of the current request for its log lines (a UUID, or nothing)."""
    from flask import g, has_request_context

    if has_request_context() and isinstance(query_id, str) and _UUID_RE.fullmatch(query_id):
        g.query_id = query_id


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class JsonFormatter(logging.Formatter):
    """Render a record as one JSON line with nothing that could be a criteria value."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
        }
        if record.name == "gunicorn.access" and isinstance(record.args, dict):
            out.update(_access_fields(record.args))
            out["msg"] = "request"
        else:
            out.update(_message(record))
        out.update(_context_ids())
        for key, value in vars(record).items():
            if key in ALLOWED_EXTRA and key not in _RESERVED and _safe_value(value):
                out[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            exc_type, _, tb = record.exc_info
            out["exc_type"] = exc_type.__name__
            out["exc_frames"] = [
                f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} {f.name}"
                for f in traceback.extract_tb(tb)
            ][-12:]
        return json.dumps(out, ensure_ascii=False, separators=(",", ":"), default=str)


def _message(record: logging.LogRecord) -> dict[str, Any]:
    template = str(record.msg)
    args = record.args
    if not args:
        return {"msg": template}
    values = tuple(args.values()) if isinstance(args, dict) else tuple(args)
    gunicorn = str(record.name).startswith("gunicorn.")
    if all(
        _number(v) or (gunicorn and isinstance(v, str) and _GUNICORN_ARG_RE.fullmatch(v))
        for v in values
    ):
        try:
            return {"msg": template % args}
        except (TypeError, ValueError, KeyError):
            pass
    return {"msg": template, "args_dropped": True}


def _safe_value(value: object) -> bool:
    """Extra fields are short identifiers or numbers, never free text."""
    if _number(value) or isinstance(value, bool):
        return True
    if isinstance(value, str):
        return len(value) <= 128 and bool(
            _RID_RE.fullmatch(value.replace(".", "-").replace("_", "-").replace(":", "-"))
        )
    return False


def _access_fields(atoms: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for atom, key in _ACCESS_ATOMS.items():
        value = atoms.get(atom)
        if value is None or value == "-":
            continue
        if key in ("status", "bytes", "duration_ms"):
            try:
                out[key] = int(value)
            except (TypeError, ValueError):
                continue
        else:
            out[key] = str(value)[:256]
    rid = atoms.get("{x-request-id}o")
    if isinstance(rid, str) and _RID_RE.fullmatch(rid):
        out["request_id"] = rid
    return out


def logconfig(level: str = "INFO", access_log: str | None = None) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` (gunicorn ``logconfig_dict``): JSON lines on stderr.

    ``access_log`` is ``None`` (no access log), ``"-"`` (standard output) or a file path.
    """
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    access: dict[str, Any] = {
        "class": "logging.StreamHandler",
        "formatter": "json",
        "stream": "ext://sys.stdout",
    }
    if access_log not in (None, "-"):
        access = {"class": "logging.FileHandler", "formatter": "json", "filename": access_log}
    # gunicorn logs access lines whenever a logging configuration is given; a level above INFO
    # is how "no access log" is said here.
    access_level = "INFO" if access_log else "WARNING"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "ibex.logs.JsonFormatter"}},
        "handlers": {"console": handler, "access": access},
        "root": {"level": level.upper(), "handlers": ["console"]},
        "loggers": {
            **{name: {"level": "WARNING"} for name in QUIET_LOGGERS},
            "gunicorn.error": {"level": level.upper(), "handlers": ["console"], "propagate": False},
            "gunicorn.access": {
                "level": access_level,
                "handlers": ["access"],
                "propagate": False,
            },
        },
    }
