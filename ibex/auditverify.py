"""Offline verification of an audit store: recompute everything, name the first bad index.

Level 0: every stored leaf must hash to its stored leaf hash, every index below the size must be
present, and a purged entry must be past its retention. Each higher level: every stored node must
be the hash of its two stored children, so by induction the whole stored tree matches the leaves.
Then every stored checkpoint must carry a valid log signature (and valid cosignatures from known
witnesses) over exactly the root recomputed at its size. The walk streams one cursor per level,
so memory stays O(log n) at any log size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ibex.auditstore import AuditStore
from ibex.errors import IbexError
from ibex.merkle import fold, leaf_hash, node_hash, node_id, root_nodes
from ibex.note import Checkpoint, Verifier, parse_note, verify_note

MAX_ISSUES = 100


@dataclass(frozen=True, slots=True)
class Issue:
    """One failure: the first entry index it affects (None when it is not about one entry)."""

    index: int | None
    message: str


@dataclass(slots=True)
class VerifyReport:
    """What :func:`verify_store` found."""

    size: int
    root: bytes | None = None
    checkpoints: int = 0
    cosignatures: int = 0
    purged: int = 0
    issues: list[Issue] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.issues

    @property
    def first_bad_index(self) -> int | None:
        indexes = [i.index for i in self.issues if i.index is not None]
        return min(indexes) if indexes else None

    def add(self, index: int | None, message: str) -> None:
        if len(self.issues) < MAX_ISSUES:
            self.issues.append(Issue(index, message))

    def summary(self) -> str:
        if self.ok:
            return (
                f"audit log OK: {self.size} entries ({self.purged} purged), "
                f"{self.checkpoints} checkpoints, {self.cosignatures} cosignatures verified"
            )
        first = self.first_bad_index
        issues = sorted(self.issues, key=lambda i: (i.index is None, i.index or 0))
        head = f"first bad index {first}: " if first is not None else ""
        return f"audit log FAILED: {head}{issues[0].message} ({len(self.issues)} problem(s))"


def verify_store(
    store: AuditStore,
    *,
    origin: str,
    log_key: Verifier | None,
    witnesses: Sequence[Verifier],
    now: float,
) -> VerifyReport:
    """Recompute the tree from the leaves and check every stored node and checkpoint."""
    try:
        size = store.size()
    except IbexError as exc:
        report = VerifyReport(size=0)
        report.add(None, f"cannot read the log size: {exc.detail}")
        return report
    report = VerifyReport(size=size)
    _check_leaves(store, size, now, report)
    level, width = 1, size >> 1
    while width:
        _check_level(store, level, width, report)
        level, width = level + 1, width >> 1
    root = _root(store, size, report)
    report.root = root
    _check_checkpoints(
        store, origin=origin, size=size, log_key=log_key, witnesses=witnesses, report=report
    )
    return report


def _check_leaves(store: AuditStore, size: int, now: float, report: VerifyReport) -> None:
    hashes = store.iter_level(0)
    cur = next(hashes, None)
    expected = 0
    for idx, leaf, expires, purged in store.iter_leaves():  # both cursors run in index order
        if idx >= size:
            report.add(idx, f"entry {idx} lies beyond the log size {size}")
            break
        for missing in range(expected, idx):
            report.add(missing, f"entry {missing} is missing")
        expected = idx + 1
        while cur is not None and cur[0] < idx:
            cur = next(hashes, None)
        h = cur[1] if cur is not None and cur[0] == idx else None
        if h is None:
            report.add(idx, f"the leaf hash of entry {idx} is missing")
        elif purged:
            report.purged += 1
            if leaf is not None:
                report.add(idx, f"entry {idx} is marked purged but still holds content")
            if expires > now:
                report.add(idx, f"entry {idx} was purged before its retention period ended")
        elif leaf is None:
            report.add(idx, f"entry {idx} has no content and is not marked purged")
        elif leaf_hash(bytes(leaf)) != h:
            report.add(idx, f"entry {idx} does not match its leaf hash (altered or moved)")
    for missing in range(expected, size):
        report.add(missing, f"entry {missing} is missing")


def _check_level(store: AuditStore, level: int, width: int, report: VerifyReport) -> None:
    """Every node (level, k) must hash its children (level-1, 2k) and (level-1, 2k+1)."""
    children = store.iter_level(level - 1)
    child = next(children, None)
    expected = 0
    for k, h in store.iter_level(level):
        if k >= width:
            break
        first_leaf = k << level
        for missing in range(expected, k):
            report.add(missing << level, f"tree node ({level}, {missing}) is missing")
        expected = k + 1
        pair: list[bytes] = []
        for want in (2 * k, 2 * k + 1):
            while child is not None and child[0] < want:
                child = next(children, None)
            if child is not None and child[0] == want:
                pair.append(child[1])
        if len(pair) != 2 or node_hash(pair[0], pair[1]) != h:
            report.add(
                first_leaf,
                f"tree node ({level}, {k}) over entries {first_leaf}.."
                f"{first_leaf + (1 << level) - 1} does not match its children",
            )
    for missing in range(expected, width):
        report.add(missing << level, f"tree node ({level}, {missing}) is missing")


def _root(store: AuditStore, size: int, report: VerifyReport) -> bytes | None:
    wanted = [node_id(lv, i) for lv, i in root_nodes(size)]
    found = store.node_hashes(wanted)
    if len(found) != len(wanted):
        report.add(None, f"the nodes for the root at size {size} are missing")
        return None
    return fold([found[n] for n in wanted])


def _check_checkpoints(
    store: AuditStore,
    *,
    origin: str,
    size: int,
    log_key: Verifier | None,
    witnesses: Sequence[Verifier],
    report: VerifyReport,
) -> None:
    previous = 0
    for cp in store.checkpoints():
        where = f"checkpoint at size {cp.size}"
        if cp.size > size:
            report.add(size, f"{where} is beyond the log size {size}: entries were removed")
            continue
        root = _root(store, cp.size, report)
        try:
            note = parse_note(cp.note)
            body = Checkpoint.parse(note.text)
            if log_key is not None:
                verify_note(note, [log_key])
            cosigs = [s for s in note.signatures if s.name != origin]
            lines = store.cosignature_lines(cp.size)
            if lines:
                cosigned = parse_note(note.text + "\n" + "".join(lines))
                known = {(w.name, w.key_id) for w in witnesses}
                if any((s.name, s.key_id) in known for s in cosigned.signatures):
                    report.cosignatures += len(verify_note(cosigned, witnesses))
        except IbexError as exc:
            report.add(None, f"{where}: {exc.detail}")
            continue
        if cosigs or body.origin != origin or body.size != cp.size:
            report.add(None, f"{where}: the stored note is not this log's checkpoint")
        elif root is not None and (body.root != root or cp.root != root):
            report.add(
                previous if previous < cp.size else None,
                f"{where} does not match the recomputed tree: an entry between index "
                f"{previous} and {cp.size - 1} was changed",
            )
        report.checkpoints += 1
        previous = cp.size
