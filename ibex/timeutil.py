"""RFC 3339 UTC timestamps as the protocol writes them (``2026-11-28T12:00:00.123Z``)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from ibex.errors import BadInput

_TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$")


def now() -> float:
    return datetime.now(UTC).timestamp()


def format_ts(ts: float) -> str:
    """Millisecond precision, always with a ``Z``."""
    # isoformat truncates to the millisecond, as the microseconds // 1000 it replaces; it takes
    # a third of strftime's time, and every message and audit entry carries a few timestamps.
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def parse_ts(text: object, *, what: str = "timestamp") -> float:
    if not isinstance(text, str) or not _TS_RE.fullmatch(text):
        raise BadInput(f"{what} must be an RFC 3339 UTC timestamp ending in Z")
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise BadInput(f"{what} is not a real date and time") from None
