"""Audit: browse and filter the privacy audit log, see the latest signed checkpoint and its
witnesses (verified here, not taken on trust), and the inclusion proof of any entry."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, abort, render_template, request
from flask.typing import ResponseReturnValue

from broker.console.auth import require
from broker.services import BrokerServices
from ibex.errors import IbexError, NotFound
from ibex.federation import witness_keys
from ibex.merkle import ProofError, root_from_inclusion_proof
from ibex.note import SIG_COSIGNATURE_V1, Checkpoint, NoteSigner, Verifier, open_checkpoint

KINDS = (
    "intake",
    "refusal",
    "decision",
    "disclosure",
    "answer",
    "failure",
    "policy",
    "membership",
    "witness",
)
PAGE_SIZE = 50
SCAN_LIMIT = 5000  # entries read per page view at most; the page links on from where it stopped
CHUNK = 500


@dataclass(frozen=True, slots=True)
class Filters:
    kind: str = ""
    purpose: str = ""
    requester: str = ""
    target: str = ""
    date_from: str = ""
    date_to: str = ""

    def matches(self, e: Mapping[str, Any]) -> bool:
        if self.kind and e.get("kind") != self.kind:
            return False
        if self.purpose and e.get("purpose") != self.purpose:
            return False
        if self.requester and e.get("requester") != self.requester:
            return False
        if (
            self.target
            and self.target != e.get("target")
            and self.target not in (e.get("targets") or ())
        ):
            return False
        day = str(e.get("time", ""))[:10]
        if self.date_from and day < self.date_from:
            return False
        return not (self.date_to and day > self.date_to)

    def params(self) -> dict[str, str]:
        """The filters as query parameters (only those set)."""
        named = {
            "kind": self.kind,
            "purpose": self.purpose,
            "requester": self.requester,
            "target": self.target,
            "from": self.date_from,
            "to": self.date_to,
        }
        return {k: v for k, v in named.items() if v}


@dataclass(frozen=True, slots=True)
class Row:
    index: int
    entry: Mapping[str, Any] | None  # None: purged (only its leaf hash remains)


@dataclass(frozen=True, slots=True)
class CheckpointStatus:
    size: int | None
    root: str | None
    signed: bool
    witnesses: tuple[tuple[str, str], ...]  # (name, cosigned at)
    problem: str | None
    uncovered: int  # entries appended since the checkpoint


def _date(text: str) -> str:
    try:
        return dt.date.fromisoformat(text).isoformat()
    except ValueError:
        return ""


def read_filters(args: Mapping[str, str]) -> Filters:
    kind = args.get("kind", "")
    return Filters(
        kind=kind if kind in KINDS else "",
        purpose=args.get("purpose", "")[:64],
        requester=args.get("requester", "")[:40],
        target=args.get("target", "")[:40],
        date_from=_date(args.get("from", "")),
        date_to=_date(args.get("to", "")),
    )


def checkpoint_status(svc: BrokerServices) -> tuple[CheckpointStatus, Checkpoint | None]:
    size_now = svc.audit.size()
    log_key = NoteSigner(svc.audit.origin, svc.keys.signing_key).verifier
    witnesses = [
        Verifier(name, SIG_COSIGNATURE_V1, key)
        for name, key in witness_keys(svc.members.list()).items()
    ]
    try:
        cp, _, verified = open_checkpoint(svc.audit.checkpoint(), log_key, witnesses=witnesses)
    except IbexError as exc:
        return CheckpointStatus(None, None, False, (), exc.detail, size_now), None
    cosigners = tuple(
        (
            v.verifier.name,
            dt.datetime.fromtimestamp(v.timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        )
        for v in verified
        if v.timestamp is not None
    )
    status = CheckpointStatus(
        size=cp.size,
        root=base64.b64encode(cp.root).decode(),
        signed=True,
        witnesses=cosigners,
        problem=None,
        uncovered=max(0, size_now - cp.size),
    )
    return status, cp


def register(bp: Blueprint, svc: BrokerServices) -> None:
    @bp.get("/audit")
    @require("oversight")
    def audit() -> ResponseReturnValue:
        filters = read_filters(request.args)
        size = svc.audit.size()
        try:
            before = min(size, int(request.args.get("before", size)))
        except ValueError:
            before = size
        rows: list[Row] = []
        end = max(0, before)
        scanned = 0
        while end > 0 and len(rows) < PAGE_SIZE and scanned < SCAN_LIMIT:
            start = max(0, end - CHUNK)
            for stored in reversed(svc.audit.entries(start, end)):
                scanned += 1
                end = stored.index
                if stored.purged or stored.leaf is None:
                    if not filters.params():  # a purged entry matches no filter
                        rows.append(Row(stored.index, None))
                else:
                    entry = json.loads(stored.leaf)
                    if filters.matches(entry):
                        rows.append(Row(stored.index, entry))
                if len(rows) >= PAGE_SIZE:
                    break
        status, _ = checkpoint_status(svc)
        return render_template(
            "audit.html",
            rows=rows,
            filters=filters,
            kinds=KINDS,
            size=size,
            older=end if end > 0 else None,
            scanned=scanned,
            checkpoint=status,
            members=[m.id for m in svc.members.list()],
        )

    @bp.get("/audit/<int:index>")
    @require("oversight")
    def audit_entry(index: int) -> ResponseReturnValue:
        size = svc.audit.size()
        if index >= size:
            abort(404, "There is no audit entry with that index.")
        stored = svc.audit.entries(index, index + 1)[0]
        entry = None if stored.purged or stored.leaf is None else json.loads(stored.leaf)
        status, cp = checkpoint_status(svc)
        proof: list[str] = []
        verdict: str
        if cp is None:
            verdict = "No signed checkpoint could be read, so there is nothing to prove against."
        elif index >= cp.size:
            verdict = (
                f"This entry was appended after the latest signed checkpoint (size {cp.size}); "
                "it will be covered by the next one."
            )
        else:
            try:
                hashes = svc.audit.inclusion_proof(index, cp.size)
                proof = [base64.b64encode(h).decode() for h in hashes]
                root = root_from_inclusion_proof(stored.leaf_hash, index, cp.size, hashes)
            except (ProofError, NotFound) as exc:
                verdict = f"The inclusion proof could not be checked: {exc.detail}"
            else:
                verdict = (
                    f"Verified: the leaf hash and these {len(hashes)} hashes recompute the root "
                    f"of the signed checkpoint of size {cp.size}."
                    if root == cp.root
                    else "NOT verified: the proof does not lead to the signed checkpoint's root."
                )
        return render_template(
            "audit_entry.html",
            index=index,
            entry=entry,
            entry_json=json.dumps(entry, indent=2, sort_keys=True) if entry else None,
            leaf_hash=stored.leaf_hash.hex(),
            proof=proof,
            verdict=verdict,
            checkpoint=status,
        )
