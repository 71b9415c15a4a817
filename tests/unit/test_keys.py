"""Member keys: generation, key ids, file permissions and fail-closed loading."""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ibex.errors import BadInput, KeyFileError
from ibex.keys import MemberKeys, PublicKeys, check_member_id, key_id, load_public


def test_key_id_is_a_hash_prefix_of_the_public_key() -> None:
    keys = MemberKeys.generate("CA-CBSA")
    raw = bytes(keys.signing_key.verify_key)
    assert keys.public.signing_keyid == hashlib.sha256(raw).hexdigest()[:32]
    assert keys.public.signing_keyid != keys.public.encryption_keyid


def test_generate_save_load_round_trip(tmp_path: Path) -> None:
    keys = MemberKeys.generate("US-CBP")
    paths = keys.save(tmp_path)
    assert [p.name for p in paths] == [
        "US-CBP.ed25519.key",
        "US-CBP.x25519.key",
        "US-CBP.public.json",
    ]
    for p in paths[:2]:
        assert p.stat().st_mode & 0o777 == 0o600
    loaded = MemberKeys.load(tmp_path, "US-CBP")
    assert loaded.public == keys.public
    assert load_public(paths[2]) == keys.public


def test_refuses_to_overwrite_private_keys(tmp_path: Path) -> None:
    MemberKeys.generate("CA-RCMP").save(tmp_path)
    with pytest.raises(KeyFileError, match="refusing to overwrite"):
        MemberKeys.generate("CA-RCMP").save(tmp_path)


def test_group_readable_key_file_is_refused(tmp_path: Path) -> None:
    sign_path = MemberKeys.generate("CA-CBSA").save(tmp_path)[0]
    sign_path.chmod(0o640)
    with pytest.raises(KeyFileError, match="chmod 600"):
        MemberKeys.load(tmp_path, "CA-CBSA")


def test_missing_key_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="does not exist"):
        MemberKeys.load(tmp_path, "CA-CBSA")


def test_key_of_another_member_is_refused(tmp_path: Path) -> None:
    MemberKeys.generate("CA-CBSA").save(tmp_path)
    for suffix in ("ed25519.key", "x25519.key"):
        (tmp_path / f"CA-CBSA.{suffix}").rename(tmp_path / f"CA-RCMP.{suffix}")
    with pytest.raises(KeyFileError, match="belongs to 'CA-CBSA'"):
        MemberKeys.load(tmp_path, "CA-RCMP")


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not json",
        b"{}",
        b'{"format": "ibex-key-v1", "member": "CA-CBSA", "algorithm": "ed25519"}',
        b'{"format": "ibex-key-v1", "member": "CA-CBSA", "algorithm": "ed25519",'
        b' "private_key": "AAAA"}',
        b'{"format": "ibex-key-v1", "member": "CA-CBSA", "algorithm": "x25519",'
        b' "private_key": "' + b"A" * 43 + b'="}',
        b"x" * 5000,
    ],
)
def test_malformed_key_files_are_refused(tmp_path: Path, content: bytes) -> None:
    MemberKeys.generate("CA-CBSA").save(tmp_path)
    path = tmp_path / "CA-CBSA.ed25519.key"
    path.write_bytes(content)
    with pytest.raises(KeyFileError):
        MemberKeys.load(tmp_path, "CA-CBSA")


def test_public_keys_json_round_trip_and_keyid_check() -> None:
    pub = MemberKeys.generate("MX-INM").public
    doc = pub.to_json()
    assert PublicKeys.from_json(doc) == pub
    doc["signing"]["keyid"] = "0" * 32
    with pytest.raises(BadInput, match="keyid does not match"):
        PublicKeys.from_json(doc)


@pytest.mark.parametrize("member", ["CA-CBSA", "US-USCG", "EU-FRONTEX", "IBEX-BROKER"])
def test_member_ids_accepted(member: str) -> None:
    assert check_member_id(member) == member


@pytest.mark.parametrize(
    "member", ["", "ca-cbsa", "CACBSA", "CA-", "-CBSA", "CA CBSA", "CA-CBSA\n"]
)
def test_member_ids_refused(member: str) -> None:
    with pytest.raises(BadInput):
        check_member_id(member)


@given(st.binary())
def test_key_id_only_takes_32_bytes(raw: bytes) -> None:
    if len(raw) == 32:
        assert len(key_id(raw)) == 32
    else:
        with pytest.raises(BadInput):
            key_id(raw)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda c: st.lists(c) | st.dictionaries(st.text(), c),
    )
)
def test_public_keys_parser_raises_only_kernel_errors(value: object) -> None:
    with contextlib.suppress(BadInput):
        PublicKeys.from_json(value)


def test_load_public_refuses_garbage(tmp_path: Path) -> None:
    p = tmp_path / "x.public.json"
    p.write_text(json.dumps({"member": "CA-CBSA"}))
    with pytest.raises(KeyFileError):
        load_public(p)
