"""The broker's member registry as several gunicorn workers see it: each worker's registry holds
the federation document it last read and re-reads it only when another worker published a newer
version (real SQLCipher file, two connections, as two workers have)."""

from __future__ import annotations

import os
from pathlib import Path

from broker.members import MemberRegistry, MemberSpec
from ibex.keys import MemberKeys
from ibex.store import open_encrypted

BROKER = MemberKeys.generate("IBEX-BROKER")


def registry(path: Path, key: bytes) -> MemberRegistry:
    return MemberRegistry(
        open_encrypted(path, key, create=True),
        BROKER,
        federation="test",
        endpoint="http://127.0.0.1:1",
    )


def spec(member: str) -> MemberSpec:
    return MemberSpec(
        id=member,
        name=member,
        country=member[:2],
        agency_kind="police",
        jurisdictions=(member[:2],),
        endpoint="http://127.0.0.1:2",
        keys=MemberKeys.generate(member).public,
    )


def test_a_worker_sees_what_another_published_and_rereads_nothing_otherwise(
    tmp_path: Path,
) -> None:
    key = os.urandom(32)
    one = registry(tmp_path / "broker.db", key)
    two = registry(tmp_path / "broker.db", key)
    one.add(spec("CA-RCMP"))
    first = two.document()
    assert [m.id for m in first.members] == ["CA-RCMP"]
    assert two.document() is first  # unchanged version: the held document, not a new parse
    assert two.trust() is two.trust()
    one.add(spec("US-CBP"))  # another worker publishes
    assert [m.id for m in two.document().members] == ["CA-RCMP", "US-CBP"]
    assert two.get("US-CBP").id == "US-CBP"
    assert two.signed_document().payload == one.signed_document().payload
