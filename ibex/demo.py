"""``ibex demo``: show what IBEX does, on this machine, in one command.

This is the foundation-stage showcase: it exercises the kernel end to end (member keys, a signed
query with criteria sealed per target, what the broker can and cannot see, opening at the target,
tamper detection, an encrypted store that fails closed). The full federation demo with real
gunicorn processes replaces it when the broker and connectors land (issue 6).
"""

from __future__ import annotations

import argparse
import base64
import json
import tempfile
from pathlib import Path
from typing import Any

from ibex.envelope import Envelope, TrustedKey, TrustStore, verify
from ibex.errors import IbexError
from ibex.keys import MemberKeys
from ibex.messages import Query
from ibex.protocol import build_query, open_criteria
from ibex.store import generate_db_key_file, load_db_key, open_encrypted

MEMBERS = ("CA-CBSA", "CA-RCMP", "US-CBP", "US-USCG", "MX-INM")


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="run the IBEX showcase on loopback")
    p.add_argument("--dir", type=Path, help="keep the demo files in DIR (default: a temp dir)")
    p.add_argument("--once", action="store_true", help="exit after the scenario")
    p.set_defaults(func=run)


def _step(n: int, title: str, outcome: str) -> None:
    print(f"{n:>2}. {title:<58} {outcome}")


def run(args: argparse.Namespace) -> int:
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
        return _scenario(args.dir)
    with tempfile.TemporaryDirectory(prefix="ibex-demo-") as tmp:
        return _scenario(Path(tmp))


def _scenario(root: Path) -> int:
    ok = True
    print(f"IBEX kernel showcase in {root}\n")
    keys = {}
    for member in MEMBERS:
        keys[member] = MemberKeys.generate(member)
        keys[member].save(root / "keys" / member, overwrite=True)
    _step(1, f"keys generated for {len(MEMBERS)} members (0600 files)", "ok")

    out = build_query(
        keys["CA-CBSA"],
        officer="officer-4711",
        purpose="border_screening",
        legal_basis="ca_customs_act_s107",
        jurisdiction="CA",
        subject_type="person",
        mode="full",
        criteria={
            "name.surname": "Ivanova",
            "name.given_names": "Maria",
            "date_of_birth": "1980-03-07",
        },
        requested_fields=["name", "nationalities"],
        targets={m: bytes(keys[m].encryption_key.public_key) for m in ("US-CBP", "CA-RCMP")},
    )
    wire = out.intake_request().to_bytes()
    blind = b"Ivanova" not in wire and b"1980-03-07" not in wire
    ok &= blind
    _step(2, "CA-CBSA signs a query; criteria sealed per target", "ok")
    _step(3, "what the broker sees holds no criteria value", "ok" if blind else "LEAK")

    trust = TrustStore.of(
        [TrustedKey("CA-CBSA", keys["CA-CBSA"].public.signing, frozenset({Query.PAYLOAD_TYPE}))]
    )
    query = Query.parse(verify(out.envelope, trust, payload_type=Query.PAYLOAD_TYPE).payload)
    print(
        "    broker's view: "
        + json.dumps(
            {
                k: v
                for k, v in query.to_json().items()
                if k in ("requester", "purpose", "criteria_fields")
            }
        )
    )
    opened = open_criteria(query, out.sealed["US-CBP"], keys["US-CBP"])
    _step(
        4, "US-CBP verifies the signature and opens its criteria", f"{len(opened.criteria)} fields"
    )

    try:
        open_criteria(query, out.sealed["CA-RCMP"], keys["US-CBP"])
        ok = False
        _step(5, "US-CBP tries to open CA-RCMP's criteria", "OPENED (bad)")
    except IbexError as exc:
        _step(5, "US-CBP tries to open CA-RCMP's criteria", f"refused [{exc.code}]")

    doc = out.envelope.to_json()
    payload = bytearray(out.envelope.payload)
    payload[payload.index(b"border_screening")] ^= 0x20
    doc["payload"] = base64.b64encode(bytes(payload)).decode()
    try:
        verify(Envelope.from_json(doc), trust, payload_type=Query.PAYLOAD_TYPE)
        ok = False
        _step(6, "a query whose purpose was altered in transit", "ACCEPTED (bad)")
    except IbexError as exc:
        _step(6, "a query whose purpose was altered in transit", f"refused [{exc.code}]")

    ok &= _store_step(root)
    print("\nevery step behaved as expected" if ok else "\nSOME STEPS FAILED")
    return 0 if ok else 1


def _store_step(root: Path) -> bool:
    ok = True
    db = root / "records.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    key = load_db_key(generate_db_key_file(root / "records.db.key", overwrite=True))
    conn = open_encrypted(db, key, create=True)
    conn.execute("CREATE TABLE person (body TEXT)")
    conn.execute("INSERT INTO person VALUES (?)", ('{"surname": "Ivanova"}',))
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    at_rest = b"Ivanova" not in db.read_bytes()
    ok &= at_rest
    _step(7, "a record stored in SQLCipher is unreadable at rest", "ok" if at_rest else "LEAK")
    try:
        open_encrypted(db, bytes(32))
        ok = False
        _step(8, "the store opened with a wrong key", "OPENED (bad)")
    except IbexError as exc:
        _step(8, "the store opened with a wrong key", f"refused [{exc.code}]")
    return ok
