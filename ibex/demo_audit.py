"""What an oversight body does with a running broker's audit log, for step 7 of ``ibex demo``:
verify the latest signed checkpoint with ``ibex audit verify`` (every entry recomputed), then
prove that one entry is in the signed tree, and check that the entry holds no criteria values.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from ibex import merkle
from ibex.errors import IbexError
from ibex.note import open_checkpoint, parse_vkey


@dataclass(frozen=True, slots=True)
class AuditCheck:
    verify_exit: int  # ibex audit verify's exit status (0: verified)
    verify_output: str
    checkpoint_size: int
    index: int
    proof_hashes: int
    included: bool  # the entry's inclusion proof leads to the signed root
    leaked: tuple[str, ...]  # the searched-for values found in the entry (none, or a bug)

    @property
    def ok(self) -> bool:
        return self.verify_exit == 0 and self.included and not self.leaked


def wait_for_checkpoint(url: str, size: int, timeout: float = 20.0) -> int:
    """The broker signs a checkpoint every ``checkpoint_seconds``: wait for one of ``size``."""
    deadline = time.monotonic() + timeout
    current = 0
    while time.monotonic() < deadline:
        text = httpx.get(url + "/v1/audit/checkpoint", timeout=5, trust_env=False).text
        current = int(text.split("\n")[1])
        if current >= size:
            return current
        time.sleep(0.25)
    raise IbexError(f"no audit checkpoint covers {size} entries after {timeout:g} s ({current})")


def check_audit(
    url: str,
    *,
    vkey: str,
    oversight_token: str,
    index: int,
    min_size: int,
    saved: Path,
    searched: Sequence[str],
) -> AuditCheck:
    """Verify the log at ``url`` from the empty tree (saving the checkpoint to ``saved``) and
    prove entry ``index``; ``searched`` are values that must not appear in that entry."""
    from ibex.cli import main  # the front door, exactly as an oversight body runs it

    wait_for_checkpoint(url, min_size)
    saved.unlink(missing_ok=True)
    header = f"Authorization: Bearer {oversight_token}"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        verify_exit = main(
            ["audit", "verify", "--url", url, "--public-key", vkey, "--checkpoint", str(saved),
             "--update", "--entries", "--header", header]
        )  # fmt: skip
    printed = out.getvalue().strip()
    if verify_exit != 0:
        return AuditCheck(verify_exit, printed, 0, index, 0, False, ())
    checkpoint, _, _ = open_checkpoint(saved.read_text(encoding="utf-8"), parse_vkey(vkey))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        proof_exit = main(
            ["audit", "proof", "--url", url, "--index", str(index),
             "--size", str(checkpoint.size)]
        )  # fmt: skip
    if proof_exit != 0:
        raise IbexError(f"ibex audit proof exited with status {proof_exit}")
    proof = [base64.b64decode(h) for h in json.loads(out.getvalue())["hashes"]]
    resp = httpx.get(
        f"{url}/v1/audit/entries",
        params={"start": index, "end": index + 1},
        headers={"Authorization": f"Bearer {oversight_token}"},
        timeout=10,
        trust_env=False,
    )
    resp.raise_for_status()
    leaf = base64.b64decode(resp.json()["entries"][0]["leaf"])
    try:
        merkle.verify_inclusion(
            merkle.leaf_hash(leaf), index, checkpoint.size, proof, checkpoint.root
        )
        included = True
    except merkle.ProofError:
        included = False
    leaked = tuple(s for s in searched if s.lower().encode() in leaf.lower())
    return AuditCheck(0, printed, checkpoint.size, index, len(proof), included, leaked)
