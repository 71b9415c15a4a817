"""``ibex audit``: verify, prove, export, witness and show the audit log.

Local commands open the encrypted store (``--db`` and ``--db-key-file``); remote ones talk to a
broker or connector (``--url``) and trust nothing but the log's verifier key (``--public-key``, a
C2SP vkey or a file holding one) and a checkpoint saved earlier. Exit status 0 means verified,
1 means a verification failure (the first one is named), 2 means the command could not run.
"""

from __future__ import annotations

import argparse
import base64
import sys
import time
from pathlib import Path
from typing import Any

from ibex.errors import BadInput, IbexError
from ibex.jsonio import dumps, loads_strict
from ibex.note import (
    SIG_COSIGNATURE_V1,
    SIG_ED25519,
    Checkpoint,
    NoteSigner,
    Verifier,
    open_checkpoint,
    parse_note,
    parse_vkey,
)

EXIT_FAILED = 1
HTTP_TIMEOUT = 30.0


def register(sub: Any) -> None:
    p = sub.add_parser("audit", help="verify and inspect the tamper-evident audit log")
    asub = p.add_subparsers(dest="audit_command", metavar="ACTION", required=True)

    v = asub.add_parser("verify", help="recompute a local store, or check a remote log")
    _store_args(v)
    _remote_args(v)
    v.add_argument("--public-key", required=True, help="the log's vkey (or a file holding it)")
    v.add_argument("--witness", action="append", default=[], help="a witness vkey (repeatable)")
    v.add_argument("--checkpoint", type=Path, help="remote: the checkpoint saved last time")
    v.add_argument("--entries", action="store_true", help="remote: fetch every entry and recompute")
    v.add_argument("--update", action="store_true", help="remote: save the new checkpoint")
    v.set_defaults(func=_verify)

    pr = asub.add_parser("proof", help="print an inclusion or consistency proof")
    _store_args(pr)
    _remote_args(pr)
    pr.add_argument("--public-key", help="the log's vkey (local stores need it for the origin)")
    pr.add_argument("--index", type=int)
    pr.add_argument("--size", type=int)
    pr.add_argument("--old", type=int)
    pr.add_argument("--new", type=int)
    pr.set_defaults(func=_proof)

    e = asub.add_parser("export", help="write a local store's entries as JSON lines")
    _store_args(e)
    e.add_argument("--public-key", required=True, help="the log's vkey")
    e.add_argument("--out", type=Path, help="file to write (default: standard output)")
    e.set_defaults(func=_export)

    w = asub.add_parser("witness", help="check a partner's log is consistent, then cosign it")
    _remote_args(w)
    w.add_argument("--public-key", required=True, help="the log's vkey (or a file holding it)")
    w.add_argument("--state", required=True, type=Path, help="the last checkpoint seen (kept)")
    w.add_argument("--key-dir", required=True, type=Path, help="directory of your member keys")
    w.add_argument("--member", required=True, help="your member id: the cosigner name")
    w.add_argument("--no-post", action="store_true", help="print the cosignature, do not send")
    w.set_defaults(func=_witness)

    c = asub.add_parser("checkpoint", help="print the latest signed checkpoint")
    _store_args(c)
    _remote_args(c)
    c.add_argument("--public-key", required=True, help="the log's vkey")
    c.set_defaults(func=_checkpoint)


def _store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", type=Path, help="a local audit store")
    p.add_argument("--db-key-file", type=Path, help="the store's key file (mode 0600)")


def _remote_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", help="base URL of a broker or connector")
    p.add_argument("--header", action="append", default=[], help="'Name: value' for requests")


# --- helpers ----------------------------------------------------------------------------------


def load_vkey(text: str, sig_type: int = SIG_ED25519) -> Verifier:
    """A vkey given inline or as a path to a file that holds one."""
    path = Path(text)
    if "+" not in text and path.is_file():
        text = path.read_text(encoding="utf-8").strip()
    verifier = parse_vkey(text.strip())
    if verifier.sig_type != sig_type:
        raise BadInput(f"{verifier.name}: expected a key of signature type {sig_type:#04x}")
    return verifier


def _open_local(args: argparse.Namespace, origin: str) -> Any:
    from ibex.auditlog import AuditLog
    from ibex.store import load_db_key

    if args.db is None or args.db_key_file is None:
        raise BadInput("give --db and --db-key-file, or --url")
    return AuditLog(args.db, load_db_key(args.db_key_file), origin=origin)


def _client(args: argparse.Namespace) -> Any:
    import httpx

    headers: dict[str, str] = {}
    for h in args.header:
        name, sep, value = h.partition(":")
        if not sep or not name.strip():
            raise BadInput("a --header is 'Name: value'")
        headers[name.strip()] = value.strip()
    return httpx.Client(base_url=args.url.rstrip("/"), headers=headers, timeout=HTTP_TIMEOUT)


def _get(client: Any, path: str, **params: int) -> Any:
    import httpx

    try:
        resp = client.get(path, params=params)
    except httpx.HTTPError as exc:
        raise IbexError(f"cannot reach {client.base_url}{path}: {type(exc).__name__}") from None
    if resp.status_code != 200:
        raise IbexError(f"{path} answered HTTP {resp.status_code}: {resp.text[:300]}")
    if path.endswith("checkpoint"):
        return resp.text
    return loads_strict(resp.content, what=path)


def _hashes(body: Any) -> list[bytes]:
    if not isinstance(body, dict) or not isinstance(body.get("hashes"), list):
        raise BadInput('a proof is {"hashes": [...]}')
    from ibex.keys import b64decode_strict

    return [b64decode_strict(h, what="proof hash", size=32) for h in body["hashes"]]


def _fail(message: str) -> int:
    print(f"FAILED: {message}", file=sys.stderr)
    return EXIT_FAILED


# --- commands ---------------------------------------------------------------------------------


def _verify(args: argparse.Namespace) -> int:
    log_key = load_vkey(args.public_key)
    witnesses = [load_vkey(w, SIG_COSIGNATURE_V1) for w in args.witness]
    if args.url:
        return _verify_remote(args, log_key, witnesses)
    with _open_local(args, log_key.name) as log:
        report = log.verify(log_key=log_key, witness_keys={w.name: w.public_key for w in witnesses})
    if not report.ok:
        for issue in sorted(report.issues, key=lambda i: (i.index is None, i.index or 0))[:20]:
            print(f"  {issue.message}", file=sys.stderr)
        return _fail(report.summary())
    print(report.summary())
    return 0


def _verify_remote(args: argparse.Namespace, log_key: Verifier, witnesses: list[Verifier]) -> int:
    from ibex import merkle

    with _client(args) as client:
        text = _get(client, "/v1/audit/checkpoint")
        try:
            new, _, verified = open_checkpoint(text, log_key, witnesses=witnesses)
        except IbexError as exc:
            return _fail(f"the log's current checkpoint does not verify: {exc.detail}")
        old = Checkpoint(log_key.name, 0, merkle.EMPTY_ROOT)
        if args.checkpoint is not None and args.checkpoint.exists():
            old, _, _ = open_checkpoint(args.checkpoint.read_text(encoding="utf-8"), log_key)
        elif args.checkpoint is not None and not args.update:
            raise BadInput(
                f"{args.checkpoint} does not exist; pass --update to start from the empty log"
            )
        if new.size < old.size:
            return _fail(f"the log shrank from {old.size} to {new.size} entries")
        proof = _hashes(_get(client, "/v1/audit/proof/consistency", old=old.size, new=new.size))
        try:
            merkle.verify_consistency(old.size, new.size, old.root, new.root, proof)
        except merkle.ProofError as exc:
            return _fail(f"size {old.size} -> {new.size} is not an append-only extension: {exc}")
        if args.entries:
            bad = _recompute_remote(client, new)
            if bad:
                return _fail(bad)
    if args.update and args.checkpoint is not None:
        args.checkpoint.write_text(text, encoding="utf-8")
    cosigners = [v.verifier.name for v in verified if v.verifier != log_key]
    print(
        f"audit log OK: size {old.size} -> {new.size} consistent"
        + (f"; cosigned by {', '.join(cosigners)}" if cosigners else "")
    )
    return 0


def _recompute_remote(client: Any, cp: Checkpoint) -> str | None:
    """Fetch every entry, check its leaf hash chain, recompute the root; a message or None."""
    from ibex import merkle
    from ibex.keys import b64decode_strict

    hashes: list[bytes] = []
    for start in range(0, cp.size, 1000):
        end = min(cp.size, start + 1000)
        body = _get(client, "/v1/audit/entries", start=start, end=end)
        for expected, e in enumerate(body.get("entries", []), start=start):
            if not isinstance(e, dict) or e.get("index") != expected:
                return f"first bad index {expected}: the entry is missing from the listing"
            if e.get("purged") is True:
                hashes.append(b64decode_strict(e.get("leaf_hash"), what="leaf hash", size=32))
            else:
                hashes.append(merkle.leaf_hash(b64decode_strict(e.get("leaf"), what="leaf")))
        if len(hashes) != end:
            return f"first bad index {len(hashes)}: the entry is missing from the listing"
    if merkle.root_from_leaf_hashes(hashes) == cp.root:
        return None
    for i, h in enumerate(hashes):  # name the first entry whose inclusion proof fails
        proof = _hashes(_get(client, "/v1/audit/proof/inclusion", index=i, size=cp.size))
        try:
            merkle.verify_inclusion(h, i, cp.size, proof, cp.root)
        except merkle.ProofError:
            return f"first bad index {i}: the entry is not in the signed tree"
    return "the entries do not recompute to the signed root"


def _proof(args: argparse.Namespace) -> int:
    inclusion = args.index is not None and args.size is not None
    if inclusion == (args.old is not None and args.new is not None):
        raise BadInput("give either --index and --size, or --old and --new")
    if args.url:
        with _client(args) as client:
            if inclusion:
                body = _get(client, "/v1/audit/proof/inclusion", index=args.index, size=args.size)
            else:
                body = _get(client, "/v1/audit/proof/consistency", old=args.old, new=args.new)
        print(dumps({"hashes": body.get("hashes", [])}).decode())
        return 0
    if not args.public_key:
        raise BadInput("a local store needs --public-key (it names the log)")
    with _open_local(args, load_vkey(args.public_key).name) as log:
        hashes = (
            log.inclusion_proof(args.index, args.size)
            if inclusion
            else log.consistency_proof(args.old, args.new)
        )
    print(dumps({"hashes": [base64.b64encode(h).decode() for h in hashes]}).decode())
    return 0


def _export(args: argparse.Namespace) -> int:
    """JSON lines: index, leaf (base64 of the exact bytes), leaf hash, purged, entry."""
    out = args.out.open("w", encoding="utf-8") if args.out else sys.stdout
    try:
        with _open_local(args, load_vkey(args.public_key).name) as log:
            size = log.size()
            for start in range(0, size, 1000):
                for e in log.entries(start, start + 1000):
                    row: dict[str, Any] = {
                        "index": e.index,
                        "leaf_hash": base64.b64encode(e.leaf_hash).decode(),
                        "purged": e.purged,
                    }
                    if e.leaf is not None:
                        row["leaf"] = base64.b64encode(e.leaf).decode()
                        row["entry"] = loads_strict(e.leaf, what=f"entry {e.index}")
                    out.write(dumps(row).decode() + "\n")
    finally:
        if args.out:
            out.close()
    return 0


def _witness(args: argparse.Namespace) -> int:
    from ibex import merkle
    from ibex.keys import MemberKeys

    log_key = load_vkey(args.public_key)
    signer = NoteSigner(
        args.member, MemberKeys.load(args.key_dir, args.member).signing_key, SIG_COSIGNATURE_V1
    )
    if not args.url:
        raise BadInput("witness needs --url")
    with _client(args) as client:
        text = _get(client, "/v1/audit/checkpoint")
        new, note, _ = open_checkpoint(text, log_key)
        old = Checkpoint(log_key.name, 0, merkle.EMPTY_ROOT)
        if args.state.exists():
            old, _, _ = open_checkpoint(args.state.read_text(encoding="utf-8"), log_key)
        if new.size < old.size:
            return _fail(f"the log shrank from {old.size} to {new.size} entries: not cosigning")
        proof = _hashes(_get(client, "/v1/audit/proof/consistency", old=old.size, new=new.size))
        try:
            merkle.verify_consistency(old.size, new.size, old.root, new.root, proof)
        except merkle.ProofError as exc:
            return _fail(f"the log is not consistent with the checkpoint seen last: {exc}")
        cosig = signer.sign(note.text.encode(), timestamp=int(time.time()))
        cosigned = parse_note(text).with_signatures([cosig]).render()
        if args.no_post:
            print(cosig.line(), end="")
        else:
            resp = client.post(
                "/v1/audit/cosignature",
                content=cosigned.encode(),
                headers={"Content-Type": "text/plain"},
            )
            if resp.status_code != 201:
                raise IbexError(f"the log refused the cosignature: HTTP {resp.status_code}")
    args.state.write_text(text, encoding="utf-8")
    print(f"cosigned {new.origin} at size {new.size} as {args.member}")
    return 0


def _checkpoint(args: argparse.Namespace) -> int:
    log_key = load_vkey(args.public_key)
    if args.url:
        with _client(args) as client:
            text = _get(client, "/v1/audit/checkpoint")
        open_checkpoint(text, log_key)
    else:
        with _open_local(args, log_key.name) as log:
            text = log.checkpoint()
        open_checkpoint(text, log_key)
    print(text, end="")
    return 0
