"""Two-person activation of policy bundles: propose, review, activate, roll back.

A legal officer *proposes* a policy directory; it is loaded (so an invalid bundle is refused),
and its files are stored, content-addressed by the bundle digest, in the broker's encrypted
store. A *second* officer reviews it; an officer who is not the proposer activates it. The rules:

- propose (officer A) -> review (officer B, B != A; approve or reject) -> activate (any officer
  but A; only an approved bundle);
- rollback re-activates a bundle that was active before; the officer must not be the one who
  activated the bundle being replaced, so one person can neither push nor revert alone;
- every step appends a ``policy`` entry to the privacy audit log with the action and the digest,
  *before* the change is committed: if the audit log cannot record, nothing changes.

Brokers poll :meth:`BundleStore.version` (one indexed read) and load the newly active bundle
without a restart (:mod:`ibex.decider`). Refusals are :class:`~ibex.errors.Forbidden` (who may
not do this) or :class:`~ibex.errors.BadInput` (what cannot be done to a bundle in this state).
"""

from __future__ import annotations

import builtins
import re
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ibex.auditentry import new_entry
from ibex.auditlog import AuditLog
from ibex.errors import BadInput, ConfigError, Forbidden, NotFound, PolicyError
from ibex.policy_bundle import AGREEMENTS_DIR, TAXONOMY_FILE, PolicyBundle
from ibex.store import Connection
from ibex.timeutil import now

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS bundles (
    digest TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    proposer TEXT NOT NULL,
    proposed_at REAL NOT NULL,
    reviewer TEXT,
    reviewed_at REAL,
    activated_by TEXT,
    activated_at REAL,
    note TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS bundle_files (
    digest TEXT NOT NULL REFERENCES bundles (digest),
    path TEXT NOT NULL,
    content BLOB NOT NULL,
    PRIMARY KEY (digest, path)
);
CREATE TABLE IF NOT EXISTS bundle_activations (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    digest TEXT NOT NULL REFERENCES bundles (digest),
    officer TEXT NOT NULL,
    action TEXT NOT NULL,
    at REAL NOT NULL
);
"""
STATUSES = ("proposed", "approved", "rejected", "active", "retired")
# The audit entry's ``actor`` pattern (schemas/messages/audit_entry.schema.json).
OFFICER_RE = re.compile(r"[A-Za-z0-9_.:@-]{1,64}")
DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
_PATH_RE = re.compile(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*")
_COLUMNS = (
    "digest, status, proposer, proposed_at, reviewer, reviewed_at, activated_by, activated_at, note"
)


@dataclass(frozen=True, slots=True)
class BundleRecord:
    """One stored bundle and who did what to it (times are POSIX seconds)."""

    digest: str
    status: str
    proposer: str
    proposed_at: float
    reviewer: str | None
    reviewed_at: float | None
    activated_by: str | None
    activated_at: float | None
    note: str

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _COLUMNS.split(", ")}


def check_officer(officer: str) -> str:
    if not isinstance(officer, str) or not OFFICER_RE.fullmatch(officer):
        raise BadInput("an officer is named by 1-64 letters, digits or _.:@- characters")
    return officer


def bundle_files(bundle: PolicyBundle) -> dict[str, bytes]:
    """The files the bundle digest covers (modules, agreements, taxonomy), as bytes."""
    paths = [*bundle.modules, *bundle.agreement_files.values(), TAXONOMY_FILE]
    return {rel: (bundle.root / rel).read_bytes() for rel in sorted(paths)}


def write_files(files: dict[str, bytes], directory: Path) -> Path:
    """Write ``files`` under ``directory`` (which must be new or empty)."""
    directory.mkdir(parents=True, exist_ok=True)
    if any(directory.iterdir()):
        raise BadInput(f"{directory} is not empty")
    for rel, content in files.items():
        if not _PATH_RE.fullmatch(rel) or ".." in rel.split("/"):
            raise PolicyError(f"a stored policy file has an unsafe path: {rel!r}")
        path = directory / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    (directory / AGREEMENTS_DIR).mkdir(exist_ok=True)
    return directory


class BundleStore:
    """Policy bundles in the broker's encrypted store (``broker.db``), with their history."""

    def __init__(
        self, conn: Connection, *, audit: AuditLog | None, retention_days: int = 730
    ) -> None:
        self._conn = conn
        self._audit = audit
        self._retention = retention_days
        self._lock = threading.RLock()
        with self._lock:
            self._conn.executescript(SCHEMA_SQL)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # --- reading ---------------------------------------------------------------------------

    def get(self, digest: str) -> BundleRecord:
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_COLUMNS} FROM bundles WHERE digest = ?",  # noqa: S608 - constant
                (digest,),
            ).fetchone()
        if row is None:
            raise NotFound(f"no policy bundle {digest} has been proposed")
        return BundleRecord(*row)

    def list(self) -> list[BundleRecord]:
        """Every bundle, newest proposal first."""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM bundles ORDER BY proposed_at DESC, digest"  # noqa: S608
            ).fetchall()
        return [BundleRecord(*row) for row in rows]

    def active(self) -> BundleRecord | None:
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_COLUMNS} FROM bundles WHERE status = 'active'"  # noqa: S608
            ).fetchone()
        return None if row is None else BundleRecord(*row)

    def version(self) -> int:
        """A number that changes with every activation or rollback (0: never activated)."""
        with self._lock:
            row = self._conn.execute("SELECT max(seq) FROM bundle_activations").fetchone()
        return int(row[0] or 0)

    def history(self) -> builtins.list[dict[str, Any]]:
        """Every activation and rollback, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, digest, officer, action, at FROM bundle_activations ORDER BY seq"
            ).fetchall()
        return [
            {"seq": s, "digest": d, "officer": o, "action": a, "at": t} for s, d, o, a, t in rows
        ]

    def files(self, digest: str) -> dict[str, bytes]:
        self.get(digest)
        with self._lock:
            rows = self._conn.execute(
                "SELECT path, content FROM bundle_files WHERE digest = ? ORDER BY path", (digest,)
            ).fetchall()
        return {str(path): bytes(content) for path, content in rows}

    def materialise(self, digest: str, directory: Path) -> Path:
        """Write the bundle's files under ``directory`` and check that they load with the same
        digest (a shared-schema change since the proposal changes it: propose again)."""
        write_files(self.files(digest), directory)
        loaded = PolicyBundle.load(directory).digest
        if loaded != digest:
            raise PolicyError(
                f"the stored bundle {digest} now loads as {loaded} (the shared schemas changed "
                "since it was proposed); propose it again"
            )
        return directory

    # --- the two-person steps --------------------------------------------------------------

    def propose(self, source_dir: Path, *, officer: str, note: str = "") -> BundleRecord:
        """Load ``source_dir`` (refusing an invalid bundle) and store its exact files."""
        check_officer(officer)
        self._require_audit()
        bundle = PolicyBundle.load(source_dir)
        files = bundle_files(bundle)
        # The files are read twice (to load, then to store): prove they did not change between.
        with tempfile.TemporaryDirectory(prefix="ibex-propose-") as tmp:
            if PolicyBundle.load(write_files(files, Path(tmp) / "b")).digest != bundle.digest:
                raise PolicyError("the policy files changed while being proposed; try again")
        digest = bundle.digest
        with self._transaction():
            row = self._conn.execute(
                "SELECT status FROM bundles WHERE digest = ?", (digest,)
            ).fetchone()
            if row is not None and row[0] != "rejected":
                raise BadInput(f"bundle {digest} is already stored ({row[0]})")
            self._record(officer, "propose", digest)
            if row is None:
                self._conn.execute(
                    "INSERT INTO bundles (digest, status, proposer, proposed_at, note)"
                    " VALUES (?, 'proposed', ?, ?, ?)",
                    (digest, officer, now(), note[:2000]),
                )
                self._conn.executemany(
                    "INSERT INTO bundle_files (digest, path, content) VALUES (?, ?, ?)",
                    [(digest, rel, content) for rel, content in files.items()],
                )
            else:  # a rejected bundle proposed again starts a new review
                self._conn.execute(
                    "UPDATE bundles SET status = 'proposed', proposer = ?, proposed_at = ?,"
                    " reviewer = NULL, reviewed_at = NULL, note = ? WHERE digest = ?",
                    (officer, now(), note[:2000], digest),
                )
        return self.get(digest)

    def review(self, digest: str, *, officer: str, approve: bool, note: str = "") -> BundleRecord:
        """Approve or reject a proposed bundle; the reviewer is never the proposer."""
        check_officer(officer)
        self._require_audit()
        with self._transaction():
            rec = self.get(digest)
            if rec.status != "proposed":
                raise BadInput(f"bundle {digest} is {rec.status}, not awaiting review")
            if officer == rec.proposer:
                raise Forbidden(
                    f"{officer} proposed bundle {digest} and cannot review it: a second legal "
                    "officer must"
                )
            self._record(officer, "approve" if approve else "reject", digest)
            text = rec.note if not note else (rec.note + "\n" if rec.note else "") + note
            self._conn.execute(
                "UPDATE bundles SET status = ?, reviewer = ?, reviewed_at = ?, note = ?"
                " WHERE digest = ?",
                ("approved" if approve else "rejected", officer, now(), text[:4000], digest),
            )
        return self.get(digest)

    def activate(self, digest: str, *, officer: str) -> BundleRecord:
        """Make an approved bundle the active one; the officer is never the proposer."""
        check_officer(officer)
        self._require_audit()
        with self._transaction():
            rec = self.get(digest)
            if officer == rec.proposer:
                raise Forbidden(
                    f"{officer} proposed bundle {digest} and cannot activate it: an officer "
                    "other than the proposer must"
                )
            if rec.status != "approved":
                raise BadInput(
                    f"bundle {digest} is {rec.status}; only a bundle approved by a second "
                    "officer can be activated"
                )
            self._switch(digest, officer, "activate")
        return self.get(digest)

    def rollback(self, digest: str, *, officer: str) -> BundleRecord:
        """Re-activate a bundle that was active before; not by whoever activated the current
        one."""
        check_officer(officer)
        self._require_audit()
        with self._transaction():
            rec = self.get(digest)
            current = self.active()
            if rec.status != "retired":
                raise BadInput(
                    f"bundle {digest} is {rec.status}; rollback returns only to a bundle that "
                    "was active before"
                )
            if current is not None and current.activated_by == officer:
                raise Forbidden(
                    f"{officer} activated the current bundle and cannot roll it back: a second "
                    "officer must"
                )
            self._switch(digest, officer, "rollback")
        return self.get(digest)

    # --- internals -------------------------------------------------------------------------

    def _switch(self, digest: str, officer: str, action: str) -> None:
        self._record(officer, action, digest)
        at = now()
        self._conn.execute("UPDATE bundles SET status = 'retired' WHERE status = 'active'")
        self._conn.execute(
            "UPDATE bundles SET status = 'active', activated_by = ?, activated_at = ?"
            " WHERE digest = ?",
            (officer, at, digest),
        )
        self._conn.execute(
            "INSERT INTO bundle_activations (digest, officer, action, at) VALUES (?, ?, ?, ?)",
            (digest, officer, action, at),
        )

    def _require_audit(self) -> AuditLog:
        if self._audit is None:
            raise ConfigError("policy bundles can only be changed with an audit log to record it")
        return self._audit

    def _record(self, officer: str, action: str, digest: str) -> None:
        """Audit the step durably, inside the transaction: no audit entry, no change."""
        details = {"action": action, "digest": digest}
        self._require_audit().append(
            new_entry("policy", retention_days=self._retention, actor=officer, details=details)
        )

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
