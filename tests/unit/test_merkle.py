"""RFC 6962 / RFC 9162 hashing and proofs against the Certificate Transparency vectors.

The eight leaves, roots and proofs below are the well-known vectors from Certificate
Transparency's ``merkle_tree_test`` as carried by Go ``transparency-dev/merkle``
(``proof/verify_test.go``, ``testonly/constants.go``). Random trees are checked against the
list-based reference recursion with hypothesis.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ibex import merkle
from ibex.merkle import (
    EMPTY_ROOT,
    ProofError,
    consistency_plan,
    fold,
    inclusion_plan,
    leaf_hash,
    reference_consistency_proof,
    reference_inclusion_proof,
    root_from_leaf_hashes,
    subtree_nodes,
    verify_consistency,
    verify_inclusion,
)

LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
ROOTS = [
    bytes.fromhex(h)
    for h in (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    )
]  # ROOTS[n] is the root of the first n leaves


def h(x: str) -> bytes:
    return bytes.fromhex(x)


# (index (0-based), size, proof)
INCLUSION = [
    (0, 1, []),
    (
        0,
        8,
        [
            h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
        ],
    ),
    (
        5,
        8,
        [
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
            h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
    (2, 3, [h("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")]),
    (
        1,
        5,
        [
            h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        ],
    ),
]

CONSISTENCY = [
    (1, 1, []),
    (
        1,
        8,
        [
            h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
        ],
    ),
    (
        6,
        8,
        [
            h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
    (
        2,
        5,
        [
            h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
            h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        ],
    ),
    (
        6,
        7,
        [
            h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
            h("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
            h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
        ],
    ),
]

HASHES = [leaf_hash(x) for x in LEAVES]
SOME = h("abacaba000000000000000000000000000000000000000000060061e00123456")


def plan_proof(hashes: list[bytes], plan: list[tuple[int, int]]) -> list[bytes]:
    """Turn a proof plan into hashes the way a stored log does: fold the perfect subtrees."""
    return [
        fold(
            [
                root_from_leaf_hashes(hashes[i << lv : (i + 1) << lv])
                for lv, i in subtree_nodes(a, b)
            ]
        )
        for a, b in plan
    ]


def test_hashing_primitives() -> None:
    assert ROOTS[0] == EMPTY_ROOT
    assert root_from_leaf_hashes([]) == EMPTY_ROOT
    assert leaf_hash(b"") == ROOTS[1]


@pytest.mark.parametrize("n", range(9))
def test_roots_match_ct_vectors(n: int) -> None:
    assert root_from_leaf_hashes(HASHES[:n]) == ROOTS[n]
    assert (
        fold(
            [
                root_from_leaf_hashes(HASHES[i << lv : (i + 1) << lv])
                for lv, i in merkle.root_nodes(n)
            ]
        )
        == ROOTS[n]
    )


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION)
def test_inclusion_vectors(index: int, size: int, proof: list[bytes]) -> None:
    assert reference_inclusion_proof(HASHES[:size], index) == proof
    assert plan_proof(HASHES[:size], inclusion_plan(index, size)) == proof
    verify_inclusion(HASHES[index], index, size, proof, ROOTS[size])


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION[1:])
def test_inclusion_corruptions_fail(index: int, size: int, proof: list[bytes]) -> None:
    root, leaf = ROOTS[size], HASHES[index]
    probes = [
        (index - 1, size, root, leaf, proof),
        (index + 1, size, root, leaf, proof),
        (index ^ 2, size, root, leaf, proof),
        (index, size * 2, root, leaf, proof),
        (index, size // 2, root, leaf, proof),
        (index, size, root, b"WrongLeaf", proof),
        (index, size, EMPTY_ROOT, leaf, proof),
        (index, size, SOME, leaf, proof),
        (index, size, root, leaf, [*proof, b""]),
        (index, size, root, leaf, [*proof, root]),
        (index, size, root, leaf, [b"", *proof]),
        (index, size, root, leaf, [root, *proof]),
        (index, size, root, leaf, proof[:-1]),
        (index, size, root, leaf, [proof[0], SOME, *proof[1:]]),
    ]
    for i in range(len(proof)):
        bad = list(proof)
        bad[i] = bytes([bad[i][0] ^ 8]) + bad[i][1:]
        probes.append((index, size, root, leaf, bad))
    for p_index, p_size, p_root, p_leaf, p_proof in probes:
        with pytest.raises(ProofError):
            verify_inclusion(p_leaf, p_index, p_size, p_proof, p_root)


@pytest.mark.parametrize(("index", "size"), [(0, 0), (0, 1), (1, 0), (2, 1)])
def test_inclusion_impossible(index: int, size: int) -> None:
    for leaf, root in ((SOME, b""), (b"", EMPTY_ROOT), (SOME, EMPTY_ROOT)):
        with pytest.raises(ProofError):
            verify_inclusion(leaf, index, size, [], root)


@pytest.mark.parametrize(("old", "new", "proof"), CONSISTENCY)
def test_consistency_vectors(old: int, new: int, proof: list[bytes]) -> None:
    assert reference_consistency_proof(HASHES[:new], old) == proof
    assert plan_proof(HASHES[:new], consistency_plan(old, new)) == proof
    verify_consistency(old, new, ROOTS[old], ROOTS[new], proof)


@pytest.mark.parametrize(("old", "new", "proof"), CONSISTENCY[1:])
def test_consistency_corruptions_fail(old: int, new: int, proof: list[bytes]) -> None:
    r1, r2 = ROOTS[old], ROOTS[new]
    probes = [
        (old - 1, new, r1, r2, proof),
        (old + 1, new, r1, r2, proof),
        (old ^ 2, new, r1, r2, proof),
        (old, new * 2, r1, r2, proof),
        (old, new // 2, r1, r2, proof),
        (old, new, b"WrongRoot", r2, proof),
        (old, new, r1, b"WrongRoot", proof),
        (old, new, r2, r1, proof),
        (old, new, r1, r2, []),
        (old, new, r1, r2, [*proof, b""]),
        (old, new, r1, r2, [*proof, r1]),
        (old, new, r1, r2, [*proof, r2]),
        (old, new, r1, r2, [b"", *proof]),
        (old, new, r1, r2, [r1, *proof]),
        (old, new, r1, r2, [r2, *proof]),
        (old, new, r1, r2, [proof[0], *proof]),
        (old, new, r1, r2, proof[:-1]),
    ]
    for i in range(len(proof)):
        bad = list(proof)
        bad[i] = bytes([bad[i][0] ^ 16]) + bad[i][1:]
        probes.append((old, new, r1, r2, bad))
    for s1, s2, a, b, p in probes:
        with pytest.raises(ProofError):
            verify_consistency(s1, s2, a, b, p)


def test_consistency_edge_sizes() -> None:
    r1, r2 = h("11" * 32), h("22" * 32)
    verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    verify_consistency(0, 5, EMPTY_ROOT, ROOTS[5], [])
    verify_consistency(3, 3, ROOTS[3], ROOTS[3], [])
    bad = [
        (1, 1, r1, r2, []),  # same size, different roots
        (1, 0, r1, r2, []),  # time travel
        (2, 1, r1, r2, []),
        (1, 2, r1, r2, []),  # empty proof
        (0, 0, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT]),  # non-empty proof where none is due
        (0, 1, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT]),
        (1, 1, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT]),
        (0, 3, r1, ROOTS[3], []),  # an empty tree has one root
        (-1, 3, r1, r2, []),
        (3, 1 << 60, r1, r2, [r1]),
    ]
    for s1, s2, a, b, p in bad:
        with pytest.raises(ProofError):
            verify_consistency(s1, s2, a, b, p)


leaf_lists = st.lists(st.binary(max_size=8), min_size=1, max_size=70, unique=True)


@settings(max_examples=150, deadline=None)
@given(leaf_lists, st.data())
def test_random_trees_match_reference(leaves: list[bytes], data: st.DataObject) -> None:
    hashes = [leaf_hash(x) for x in leaves]
    n = len(hashes)
    root = root_from_leaf_hashes(hashes)
    assert (
        fold(
            [
                root_from_leaf_hashes(hashes[i << lv : (i + 1) << lv])
                for lv, i in merkle.root_nodes(n)
            ]
        )
        == root
    )
    index = data.draw(st.integers(0, n - 1))
    proof = reference_inclusion_proof(hashes, index)
    assert plan_proof(hashes, inclusion_plan(index, n)) == proof
    verify_inclusion(hashes[index], index, n, proof, root)
    old = data.draw(st.integers(0, n))
    cproof = reference_consistency_proof(hashes, old)
    assert plan_proof(hashes, consistency_plan(old, n)) == cproof
    verify_consistency(old, n, root_from_leaf_hashes(hashes[:old]), root, cproof)
    if cproof:
        with pytest.raises(ProofError):
            verify_consistency(old, n, root_from_leaf_hashes(hashes[:old]), root, cproof[:-1])
        with pytest.raises(ProofError):
            verify_consistency(old, n, root, root_from_leaf_hashes(hashes[:old]), cproof)
    if proof:
        with pytest.raises(ProofError):
            verify_inclusion(hashes[index], index, n, [*proof, proof[0]], root)


def test_node_ids_number_subtrees_in_the_order_appends_complete_them() -> None:
    expected: list[tuple[int, int]] = []
    for leaf in range(1100):  # each leaf, then every subtree it completes, bottom up
        expected.append((0, leaf))
        level = 1
        while (leaf + 1) % (1 << level) == 0:
            expected.append((level, ((leaf + 1) >> level) - 1))
            level += 1
        assert merkle.node_count(leaf + 1) == len(expected)
    assert [merkle.node_id(level, index) for level, index in expected] == list(range(len(expected)))
    assert merkle.node_count(0) == 0
    top = merkle.MAX_SIZE - 1
    assert merkle.node_id(0, top) < 2**63  # fits an SQLite INTEGER key
