"""Hit references: opaque, expiring tokens that stand for a record in hit/no-hit answers.

A hit/no-hit answer tells the requester *that* a record exists, not what it says. The token lets
the requester ask for the full record in a follow-up query — which the broker's policy decides on
again, with the agreement's follow-up conditions. A token is bound to the requester it was issued
to and to the record; it expires; it reveals nothing (256 random bits).
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass
from pathlib import Path

from ibex.errors import BadInput, Forbidden
from ibex.store import open_encrypted
from ibex.timeutil import now

TOKEN_BYTES = 32


@dataclass(frozen=True, slots=True)
class Reference:
    token: str
    entity_type: str
    source_id: str
    requester: str
    query_id: str
    expires: float


class ReferenceStore:
    def __init__(self, path: Path, key: bytes) -> None:
        self._conn = open_encrypted(path, key, create=True)
        self._lock = threading.Lock()
        with self._lock:
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS refs (token TEXT PRIMARY KEY,"
                " entity_type TEXT NOT NULL, source_id TEXT NOT NULL,"
                " requester TEXT NOT NULL, query_id TEXT NOT NULL,"
                " expires REAL NOT NULL) WITHOUT ROWID"
            )

    def issue(
        self, *, entity_type: str, source_id: str, requester: str, query_id: str, ttl: float
    ) -> Reference:
        ref = Reference(
            token=secrets.token_urlsafe(TOKEN_BYTES),
            entity_type=entity_type,
            source_id=source_id,
            requester=requester,
            query_id=query_id,
            expires=now() + ttl,
        )
        with self._lock:
            self._conn.execute(
                "INSERT INTO refs VALUES (?, ?, ?, ?, ?, ?)",
                (ref.token, entity_type, source_id, requester, query_id, ref.expires),
            )
        return ref

    def resolve(self, token: object, *, requester: str, entity_type: str) -> Reference:
        """The reference behind ``token``, if it was issued to ``requester`` and is current."""
        if not isinstance(token, str) or not 16 <= len(token) <= 200:
            raise BadInput("the hit reference is malformed")
        with self._lock:
            row = self._conn.execute(
                "SELECT token, entity_type, source_id, requester, query_id, expires"
                " FROM refs WHERE token = ?",
                (token,),
            ).fetchone()
        if row is None:
            raise Forbidden("the hit reference is unknown")
        ref = Reference(*row)
        if ref.requester != requester:
            raise Forbidden("the hit reference was issued to another member")
        if ref.entity_type != entity_type:
            raise Forbidden("the hit reference is for another subject type")
        if ref.expires <= now():
            raise Forbidden("the hit reference has expired")
        return ref

    def prune(self) -> int:
        with self._lock:
            cur = self._conn.execute("DELETE FROM refs WHERE expires <= ?", (now(),))
        return int(cur.rowcount)

    def close(self) -> None:
        with self._lock:
            self._conn.close()
