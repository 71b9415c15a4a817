"""Timestamps as every message and audit entry writes them: RFC 3339, UTC, milliseconds, Z."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from ibex.timeutil import format_ts, parse_ts

# From 1970 to 2100, with sub-millisecond parts and values just under a millisecond boundary.
TIMES = st.floats(0, 4_102_444_800, allow_nan=False) | st.integers(0, 4_102_444_800).map(
    lambda s: s + 0.9995
)


def reference(ts: float) -> str:
    """The format spelled out field by field (what format_ts wrote before it used isoformat)."""
    dt = datetime.fromtimestamp(ts, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


@given(TIMES)
def test_format_matches_the_reference_and_parses_back(ts: float) -> None:
    text = format_ts(ts)
    assert text == reference(ts)
    assert len(text) == 24 and text.endswith("Z")
    assert 0 <= ts - parse_ts(text) < 0.001 + 1e-6  # truncated to the millisecond


def test_known_values() -> None:
    assert format_ts(0) == "1970-01-01T00:00:00.000Z"
    assert format_ts(1_795_867_200.9999) == "2026-11-28T12:00:00.999Z"
