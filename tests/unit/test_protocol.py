"""Shared protocol steps: sealed criteria per target, time windows, nonces."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import pytest

from ibex.errors import BadInput, ReplayError, SealError, TimeWindowError
from ibex.keys import MemberKeys
from ibex.messages import Query
from ibex.nonces import NonceStore
from ibex.protocol import check_window, new_nonce, open_criteria
from ibex.store import generate_db_key_file, load_db_key
from ibex.timeutil import format_ts
from tests.support.factories import PERSON_CRITERIA, person_query

CBSA = MemberKeys.generate("CA-CBSA")
CBP = MemberKeys.generate("US-CBP")
USCG = MemberKeys.generate("US-USCG")


def test_each_target_gets_its_own_sealed_criteria() -> None:
    out = person_query(CBSA, {"US-CBP": CBP, "US-USCG": USCG})
    assert set(out.sealed) == {"US-CBP", "US-USCG"}
    assert out.sealed["US-CBP"] != out.sealed["US-USCG"]
    for member, keys in (("US-CBP", CBP), ("US-USCG", USCG)):
        opened = open_criteria(out.query, out.sealed[member], keys)
        assert dict(opened.criteria) == PERSON_CRITERIA
    # The signed metadata holds field names, never values.
    assert b"Ivanova" not in out.envelope.payload


def test_criteria_sealed_to_another_target_are_refused() -> None:
    out = person_query(CBSA, {"US-CBP": CBP, "US-USCG": USCG})
    with pytest.raises(SealError, match="do not match the signed digest"):
        open_criteria(out.query, out.sealed["US-USCG"], CBP)


def test_criteria_from_another_query_are_refused() -> None:
    first = person_query(CBSA, {"US-CBP": CBP})
    second = person_query(CBSA, {"US-CBP": CBP})
    # Splice the first query's sealed criteria (and its digest) into the second query.
    spliced = dataclasses.replace(second.query, targets=first.query.targets)
    with pytest.raises(SealError, match="another query"):
        open_criteria(spliced, first.sealed["US-CBP"], CBP)


def test_criteria_fields_must_match_the_declared_fields() -> None:
    out = person_query(CBSA, {"US-CBP": CBP})
    liar = dataclasses.replace(out.query, criteria_fields=("surname",))
    with pytest.raises(BadInput, match="other fields than the query declares"):
        open_criteria(liar, out.sealed["US-CBP"], CBP)


def test_not_a_target() -> None:
    out = person_query(CBSA, {"US-CBP": CBP})
    with pytest.raises(BadInput, match="not a target"):
        open_criteria(out.query, out.sealed["US-CBP"], USCG)


def test_build_query_validates_before_signing() -> None:
    with pytest.raises(BadInput):
        person_query(CBSA, {"US-CBP": CBP}, purpose="Not A Purpose")
    with pytest.raises(BadInput):
        person_query(CBSA, {"US-CBP": CBP}, criteria={})


@pytest.mark.parametrize(
    ("issued", "expires", "match"),
    [
        (1000.0 + 120, 1000.0 + 240, "future"),
        (1000.0 - 400, 1000.0 - 100, "expired"),
        (1000.0, 1000.0 + 3600, "longer than"),
    ],
)
def test_time_window_refusals(issued: float, expires: float, match: str) -> None:
    with pytest.raises(TimeWindowError, match=match):
        check_window(format_ts(issued), format_ts(expires), skew=60, max_ttl=300, at=1000.0)


def test_time_window_accepts_small_skew() -> None:
    assert check_window(format_ts(1030.0), format_ts(1100.0), skew=60, max_ttl=300, at=1000.0)


def test_query_times_are_parsed_by_the_schema() -> None:
    q = person_query(CBSA, {"US-CBP": CBP}).query
    Query.from_json(q.to_json())


def test_nonce_store_refuses_replays_across_instances(tmp_path: Path) -> None:
    key = load_db_key(generate_db_key_file(tmp_path / "k"))
    store = NonceStore(tmp_path / "nonces.db", key)
    nonce = new_nonce()
    store.remember("CA-CBSA", nonce, 2e9)
    with pytest.raises(ReplayError):
        store.remember("CA-CBSA", nonce, 2e9)
    store.remember("US-CBP", nonce, 2e9)  # scopes are independent
    store.close()
    # A restart (a new process would open the same file) still refuses it.
    again = NonceStore(tmp_path / "nonces.db", key)
    assert again.seen("CA-CBSA", nonce)
    with pytest.raises(ReplayError):
        again.remember("CA-CBSA", nonce, 2e9)
    again.close()


def test_nonce_store_concurrent_race_accepts_exactly_one(tmp_path: Path) -> None:
    key = load_db_key(generate_db_key_file(tmp_path / "k"))
    stores = [NonceStore(tmp_path / "nonces.db", key) for _ in range(4)]
    nonce = new_nonce()
    accepted: list[int] = []

    def attempt(i: int) -> None:
        try:
            stores[i % 4].remember("CA-CBSA", nonce, 2e9)
            accepted.append(i)
        except ReplayError:
            pass

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(accepted) == 1
    for s in stores:
        s.close()
