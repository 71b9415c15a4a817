"""Transparency figures from the audit log: decisions by purpose, partner and outcome, and the
hit rate per day, with small counts suppressed so that no one can be singled out.

Suppression (threshold ``k``, 5 by default):

- a count from 1 to k-1 is shown as "fewer than k" (primary suppression);
- in a row that shows its total, when exactly one cell is suppressed, the smallest other non-zero
  cell is hidden too, so the suppressed count cannot be recovered by subtraction;
- a row total from 1 to k-1 is suppressed; when exactly one row total of a table is suppressed,
  the smallest other row is hidden entirely, so that the table's grand total (or the other table,
  which counts the same decisions another way) does not give it away;
- a day's hit rate is shown only when that day had at least k answers and either no hit or at
  least k hits.

Secondary suppressions are shown as "hidden" (:data:`HIDDEN`): they are not small counts.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ibex.auditlog import AuditLog
from ibex.timeutil import parse_ts

PAGE = 500
DEFAULT_K = 5
MAX_SCAN = 500_000  # a bound on one page view's work; the page says when it was reached
OUTCOMES = ("allowed", "denied")
HIDDEN = -1  # a cell hidden by secondary suppression (its count is not small)


@dataclass(frozen=True, slots=True)
class Row:
    label: str
    cells: tuple[int | None, ...]  # None: fewer than k; HIDDEN: hidden to protect another cell
    total: int | None


@dataclass
class Figures:
    since: str
    k: int
    scanned: int = 0
    capped: bool = False
    purged: int = 0
    decisions: int = 0
    by_purpose: list[Row] = field(default_factory=list)
    by_partner: list[Row] = field(default_factory=list)
    hit_days: list[tuple[str, int | None, int | None, float | None]] = field(default_factory=list)


def suppress_row(cells: Sequence[int], k: int) -> tuple[tuple[int | None, ...], int | None]:
    """Primary and secondary suppression of one row with its total."""
    out: list[int | None] = [None if 0 < c < k else c for c in cells]
    if sum(c is None for c in out) == 1:
        others = [(c, i) for i, c in enumerate(cells) if out[i] is not None and c > 0]
        if others:
            out[min(others)[1]] = HIDDEN
    total = sum(cells)
    return tuple(out), (None if 0 < total < k else total)


def suppress_table(counts: dict[str, Sequence[int]], k: int) -> list[Row]:
    """Rows (sorted by label) with cell, row and table-level suppression."""
    rows = {name: suppress_row(cells, k) for name, cells in counts.items()}
    small = [name for name, (_, total) in rows.items() if total is None]
    if len(small) == 1:
        others = [(sum(counts[n]), n) for n, (_, t) in rows.items() if t is not None and t > 0]
        if others:
            victim = min(others)[1]
            rows[victim] = (tuple(HIDDEN for _ in counts[victim]), HIDDEN)
    return [Row(name, *rows[name]) for name in sorted(rows)]


def _entries_since(log: AuditLog, since: float) -> Iterator[tuple[dict[str, Any] | None, int]]:
    """Entries newest first until a whole page is older than ``since`` (None: purged)."""
    end = log.size()
    scanned = 0
    while end > 0 and scanned < MAX_SCAN:
        start = max(0, end - PAGE)
        page = log.entries(start, end)
        any_recent = False
        for stored in reversed(page):
            scanned += 1
            if stored.purged or stored.leaf is None:
                yield None, scanned
                continue
            entry = json.loads(stored.leaf)
            if parse_ts(entry["time"]) >= since:
                any_recent = True
                yield entry, scanned
        if not any_recent:
            return
        end = start


def compute(
    log: AuditLog, *, days: int, k: int = DEFAULT_K, today: dt.date | None = None
) -> Figures:
    today = today or dt.datetime.now(dt.UTC).date()
    first = today - dt.timedelta(days=days - 1)
    since = dt.datetime(first.year, first.month, first.day, tzinfo=dt.UTC).timestamp()
    figs = Figures(since=first.isoformat(), k=k)
    purposes: defaultdict[str, Counter[str]] = defaultdict(Counter)
    partners: defaultdict[str, Counter[str]] = defaultdict(Counter)
    answers: Counter[str] = Counter()
    hits: Counter[str] = Counter()
    for entry, scanned in _entries_since(log, since):
        figs.scanned = scanned
        if entry is None:
            figs.purged += 1
            continue
        if parse_ts(entry["time"]) < since:
            continue
        kind = entry.get("kind")
        if kind == "decision":
            decision = entry.get("decision") or {}
            outcome = "allowed" if decision.get("allow") is True else "denied"
            purposes[str(entry.get("purpose", "unknown"))][outcome] += 1
            partners[str(entry.get("target", "unknown"))][outcome] += 1
            figs.decisions += 1
        elif kind == "disclosure":
            key = str(entry["time"])[:10]
            answers[key] += 1
            if int((entry.get("disclosure") or {}).get("record_count", 0)) > 0:
                hits[key] += 1
    figs.capped = figs.scanned >= MAX_SCAN
    figs.by_purpose = suppress_table({p: [c[o] for o in OUTCOMES] for p, c in purposes.items()}, k)
    figs.by_partner = suppress_table({p: [c[o] for o in OUTCOMES] for p, c in partners.items()}, k)
    day = first
    while day <= today:
        key = day.isoformat()
        total, hit = answers[key], hits[key]
        shown_total = None if 0 < total < k else total
        shown_hits = None if 0 < hit < k or shown_total is None else hit
        rate = hit / total if total and shown_total is not None and shown_hits is not None else None
        figs.hit_days.append((key, shown_total, shown_hits, rate))
        day += dt.timedelta(days=1)
    return figs
