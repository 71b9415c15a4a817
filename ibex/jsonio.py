"""Strict JSON parsing for everything that crosses a trust boundary.

Python's ``json`` accepts duplicate keys (last one wins), ``NaN`` and ``Infinity``, and has no size
limit. Two parsers that disagree on duplicate keys are a classic way to make a signature cover one
value and a policy see another, so every kernel parser goes through :func:`loads_strict`.
"""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

from ibex.errors import BadInput, InputTooLarge

DEFAULT_MAX_BYTES = 1 << 20  # 1 MiB
MAX_DEPTH = 64


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)  # in C; only an object with a repeated key needs the loop below
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise BadInput(f"duplicate JSON object key {key!r}")
            seen.add(key)
    return out


def _no_constants(name: str) -> Any:
    raise BadInput(f"JSON constant {name} is not allowed")


# A complete JSON string literal (unrolled so that the regex engine never backtracks), and every
# character that is not a bracket. Both run in C: the depth check looks at no character in Python
# except the brackets, which matters because every message that crosses a boundary is checked.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def _depth_ok(data: str) -> bool:
    """Whether no array or object in ``data`` lies deeper than MAX_DEPTH. Brackets inside strings
    do not count; an unterminated string counts its brackets, which can only over-estimate the
    depth of text that is not JSON anyway."""
    if data.count("[") + data.count("{") <= MAX_DEPTH:
        return True  # it cannot nest deeper than it has openings
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", data))
    return max(itertools.accumulate(map(_STEP.__getitem__, brackets), initial=0)) <= MAX_DEPTH


def loads_strict(
    data: bytes | str, *, max_bytes: int = DEFAULT_MAX_BYTES, what: str = "JSON"
) -> Any:
    """Parse JSON, refusing oversized input, duplicate keys, NaN/Infinity and deep nesting.

    Raises only :class:`~ibex.errors.BadInput` (or its subclass ``InputTooLarge``).
    """
    size = len(data.encode() if isinstance(data, str) else data)
    if size > max_bytes:
        raise InputTooLarge(f"{what} is {size} bytes; the limit is {max_bytes}")
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise BadInput(f"{what} is not valid UTF-8") from None
    else:
        text = data
    if not _depth_ok(text):
        raise BadInput(f"{what} is nested deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except json.JSONDecodeError as exc:
        raise BadInput(f"{what} is not valid JSON: {exc.msg} at line {exc.lineno}") from None
    except RecursionError:
        raise BadInput(f"{what} is nested too deeply") from None


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON for the wire (not canonical; see :mod:`ibex.canonical` for hashing)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
