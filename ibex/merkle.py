"""RFC 6962 / RFC 9162 Merkle tree hashing, proof planning and proof verification.

Pure functions, no storage. The tree over ``n`` leaves hashes a leaf as ``SHA-256(0x00 || leaf)``
and an interior node as ``SHA-256(0x01 || left || right)``, splitting at the largest power of two
smaller than ``n`` (RFC 9162 §2.1.1). A stored log keeps the hash of every *perfect* subtree
(``2**level`` leaves starting at a multiple of ``2**level``) under :func:`node_id`, numbered in
the order appends complete them; every range a proof needs is either such a subtree or a
right-edge range that folds from a handful of them, so roots and proofs at any size are
O(log n) look-ups (see :func:`subtree_nodes`).

Verification follows RFC 9162 §2.1.3.2 and §2.1.4.2 exactly and fails closed: wrong-length
proofs, trailing hashes, impossible sizes and proofs that do not use up the second size are all a
:class:`ProofError`. :func:`reference_inclusion_proof` and :func:`reference_consistency_proof` are
the textbook recursions over a list, kept as a second implementation for tests.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from ibex.errors import BadInput

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
LEVEL_SHIFT = 48  # 2**48 leaves is plenty (and node ids stay well inside SQLite's 63 bits)
MAX_SIZE = 1 << LEVEL_SHIFT

Range = tuple[int, int]  # [start, end) over leaf indexes
Node = tuple[int, int]  # (level, index): the perfect subtree of 2**level leaves at index*2**level


class ProofError(BadInput):
    """A Merkle proof, size or root that does not verify."""

    code = "proof-invalid"
    status = 422
    title = "Merkle proof does not verify"


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def node_id(level: int, index: int) -> int:
    """The integer key under which a stored log keeps the perfect subtree ``(level, index)``.

    Nodes are numbered in the order an append-only log completes them (post-order: a leaf, then
    the subtrees it completes, bottom up), so the nodes an append adds are consecutive keys at
    the right edge of the table and a commit writes a page or two of nodes, not a page per
    level. The subtree ends with leaf ``m - 1``, ``m = (index + 1) << level``; the leaves before
    it completed :func:`node_count` ``(m - 1)`` nodes, and it is the ``level``-th that leaf
    ``m - 1`` completes.
    """
    return node_count(((index + 1) << level) - 1) + level


def node_count(size: int) -> int:
    """How many perfect subtrees (leaves included) a tree of ``size`` leaves has: the next key.

    ``sum(size >> level for level >= 0)``, which is ``2 * size - popcount(size)``.
    """
    return 2 * size - size.bit_count()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def _check_size(size: int, what: str = "tree size") -> None:
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size < MAX_SIZE:
        raise ProofError(f"{what} must be an integer between 0 and {MAX_SIZE - 1}")


# --- planning: which subtrees a root or proof needs -------------------------------------------


def subtree_nodes(start: int, end: int) -> list[Node]:
    """The perfect subtrees that tile ``[start, end)``, left to right, largest first.

    For the ranges RFC 9162 trees are built from (perfect subtrees and right-edge ranges whose
    start is aligned), the range's hash is these nodes folded from the right (:func:`fold`).
    """
    nodes: list[Node] = []
    while start < end:
        level = (start & -start).bit_length() - 1 if start else LEVEL_SHIFT
        while (1 << level) > end - start:
            level -= 1
        nodes.append((level, start >> level))
        start += 1 << level
    return nodes


def fold(hashes: Sequence[bytes]) -> bytes:
    """Fold subtree hashes from the right: ``H(h0, H(h1, ... H(hn-2, hn-1)))``."""
    if not hashes:
        return EMPTY_ROOT
    acc = hashes[-1]
    for h in reversed(hashes[:-1]):
        acc = node_hash(h, acc)
    return acc


def inclusion_plan(index: int, size: int) -> list[Range]:
    """The ranges whose hashes form the inclusion proof of ``index`` in a tree of ``size``.

    RFC 9162 §2.1.3.1, returning ranges (bottom first) instead of hashes.
    """
    _check_size(size)
    if not isinstance(index, int) or not 0 <= index < size:
        raise ProofError(f"leaf index must be at least 0 and below the tree size {size}")
    out: list[Range] = []
    start, end, m = 0, size, index
    while end - start > 1:
        k = _split(end - start)
        if m < k:
            out.append((start + k, end))
            end = start + k
        else:
            out.append((start, start + k))
            start, m = start + k, m - k
    out.reverse()
    return out


def consistency_plan(old: int, new: int) -> list[Range]:
    """The ranges whose hashes form the consistency proof from ``old`` to ``new`` leaves.

    RFC 9162 §2.1.4.1 (SUBPROOF), returning ranges; empty when ``old`` is 0 or equals ``new``.
    """
    _check_size(old, "old tree size")
    _check_size(new, "new tree size")
    if old > new:
        raise ProofError(f"old tree size {old} is larger than new tree size {new}")
    if old in (0, new):
        return []
    out: list[Range] = []
    start, end, m, complete = 0, new, old, True
    while True:
        n = end - start
        if m == n:
            if not complete:
                out.append((start, end))
            break
        k = _split(n)
        if m <= k:
            out.append((start + k, end))
            end = start + k
        else:
            out.append((start, start + k))
            start, m, complete = start + k, m - k, False
    out.reverse()
    return out


def root_nodes(size: int) -> list[Node]:
    """The perfect subtrees whose fold is the root of a tree of ``size`` leaves."""
    _check_size(size)
    return subtree_nodes(0, size)


# --- in-memory computation (reference and tests) ---------------------------------------------


def root_from_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """The RFC 9162 root over the given leaf hashes, by the textbook recursion."""
    n = len(hashes)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return hashes[0]
    k = _split(n)
    return node_hash(root_from_leaf_hashes(hashes[:k]), root_from_leaf_hashes(hashes[k:]))


def reference_inclusion_proof(hashes: Sequence[bytes], index: int) -> list[bytes]:
    """RFC 9162 PATH(m, D[n]) over a list of leaf hashes (the second implementation)."""
    n = len(hashes)
    if not 0 <= index < n:
        raise ProofError("leaf index out of range")
    if n == 1:
        return []
    k = _split(n)
    if index < k:
        return [
            *reference_inclusion_proof(hashes[:k], index),
            root_from_leaf_hashes(hashes[k:]),
        ]
    return [
        *reference_inclusion_proof(hashes[k:], index - k),
        root_from_leaf_hashes(hashes[:k]),
    ]


def reference_consistency_proof(hashes: Sequence[bytes], old: int) -> list[bytes]:
    """RFC 9162 PROOF(m, D[n]) over a list of leaf hashes (the second implementation)."""
    if not 0 <= old <= len(hashes):
        raise ProofError("old tree size out of range")
    if old in (0, len(hashes)):
        return []

    def sub(m: int, d: Sequence[bytes], complete: bool) -> list[bytes]:
        n = len(d)
        if m == n:
            return [] if complete else [root_from_leaf_hashes(d)]
        k = _split(n)
        if m <= k:
            return [*sub(m, d[:k], complete), root_from_leaf_hashes(d[k:])]
        return [*sub(m - k, d[k:], False), root_from_leaf_hashes(d[:k])]

    return sub(old, hashes, True)


# --- verification (RFC 9162 §2.1.3.2 and §2.1.4.2) --------------------------------------------


def _check_hashes(proof: Sequence[bytes], *roots: bytes) -> None:
    for h in (*proof, *roots):
        if not isinstance(h, bytes) or len(h) != HASH_SIZE:
            raise ProofError(f"every hash must be {HASH_SIZE} bytes")


def root_from_inclusion_proof(
    leaf_hash_: bytes, index: int, size: int, proof: Sequence[bytes]
) -> bytes:
    """The root an inclusion proof implies, or :class:`ProofError` if it is malformed."""
    _check_size(size)
    _check_hashes(proof, leaf_hash_)
    if not isinstance(index, int) or not 0 <= index < size:
        raise ProofError(f"leaf index {index} is not below the tree size {size}")
    fn, sn, r = index, size - 1, leaf_hash_
    for p in proof:
        if sn == 0:
            raise ProofError("the inclusion proof is longer than the tree allows")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the inclusion proof is shorter than the tree requires")
    return r


def verify_inclusion(
    leaf_hash_: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Raise :class:`ProofError` unless ``proof`` shows leaf ``index`` in the tree ``root``."""
    _check_hashes((), root)
    if root_from_inclusion_proof(leaf_hash_, index, size, proof) != root:
        raise ProofError(f"the inclusion proof for leaf {index} does not lead to the root")


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Raise :class:`ProofError` unless ``proof`` shows the old tree is a prefix of the new one."""
    _check_size(old_size, "old tree size")
    _check_size(new_size, "new tree size")
    _check_hashes(proof, old_root, new_root)
    if old_size > new_size:
        raise ProofError(f"old tree size {old_size} is larger than new tree size {new_size}")
    if old_size in (0, new_size):
        if proof:
            raise ProofError("the consistency proof must be empty for these sizes")
        if old_size == 0 and old_root != EMPTY_ROOT:
            raise ProofError("the root of an empty tree is SHA-256 of nothing")
        if old_size == new_size and old_root != new_root:
            raise ProofError("two trees of the same size have different roots")
        return
    if not proof:
        raise ProofError("the consistency proof is empty")
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is a node of the new tree
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("the consistency proof is longer than the trees allow")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the consistency proof is shorter than the trees require")
    if fr != old_root:
        raise ProofError(f"the consistency proof does not lead to the root of size {old_size}")
    if sr != new_root:
        raise ProofError(f"the consistency proof does not lead to the root of size {new_size}")
