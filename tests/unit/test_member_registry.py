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


def test_every_published_version_is_kept_and_a_view_is_one_version(tmp_path: Path) -> None:
    key = os.urandom(32)
    one = registry(tmp_path / "broker.db", key)
    one.add(spec("CA-RCMP"))
    before = one.view()
    one.set_status("CA-RCMP", "suspended")
    after = one.view()
    # A view taken before the change still answers for its own version, whole.
    assert (before.version, after.version) == (2, 3)
    assert before.active("CA-RCMP").status == "active"
    assert after.get("CA-RCMP").status == "suspended"
    assert before.trust is not after.trust
    # Every version the broker published can be read back, as it was signed.
    for version, members in ((1, []), (2, ["active"]), (3, ["suspended"])):
        doc = one.document_at(version)
        assert doc is not None and doc.version == version
        assert [m.status for m in doc.members] == members
    assert one.document_at(4) is None


def test_a_store_from_before_the_history_starts_it_with_its_current_document(
    tmp_path: Path,
) -> None:
    key = os.urandom(32)
    old = registry(tmp_path / "broker.db", key)
    old.add(spec("CA-RCMP"))
    conn = open_encrypted(tmp_path / "broker.db", key)
    conn.execute("DROP TABLE federation_history")  # as a store written by an older broker
    conn.close()
    reopened = registry(tmp_path / "broker.db", key)
    kept = reopened.document_at(2)
    assert kept is not None and [m.id for m in kept.members] == ["CA-RCMP"]
    assert reopened.document_at(1) is None  # published before the history: gone
