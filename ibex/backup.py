"""Online backup and restore of a broker's or connector's data directory.

A backup is a directory: one consistent copy of every SQLCipher store (SQLite's online backup
API, page by page under the same key, so the copy is as encrypted as the original and never
exists in plaintext, not even in a temporary file), a copy of every other file (the cached
federation document), and ``ibex-backup.json`` listing each file's SHA-256. Before it reports
success, the backup opens every copy with the key and re-verifies the copied audit log (every
leaf, node and signed checkpoint) — a backup that does not verify is not a backup.

Restore checks the manifest's digests, opens and verifies the copies with the *configured* key,
refuses while a server has the data directory open (always: that would corrupt it) and refuses to
replace a data directory that holds stores unless forced; the replaced directory is kept beside
the new one, never deleted.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlcipher3

from ibex.auditlog import AuditLog
from ibex.config import BrokerConfig, ConnectorConfig
from ibex.errors import ConfigError, StoreError
from ibex.keys import MemberKeys
from ibex.note import Checkpoint, parse_note
from ibex.store import SQLITE_PLAIN_HEADER, load_db_key, open_encrypted
from ibex.timeutil import format_ts

MANIFEST = "ibex-backup.json"
FORMAT = "ibex-backup/1"
AUDIT_FILES = {"broker": "audit.db", "connector": "disclosures.db"}
# SQLite's transient files, and the empty lock files of ibex.writelock: none is data.
_SKIP_SUFFIXES = ("-wal", "-shm", "-journal", ".db.lock")

AnyConfig = BrokerConfig | ConnectorConfig


@dataclass(frozen=True, slots=True)
class BackupReport:
    directory: Path
    kind: str
    files: list[dict[str, Any]] = field(default_factory=list)
    audit_size: int = 0

    def summary(self) -> str:
        stores = sum(1 for f in self.files if f["store"])
        return (
            f"{self.kind} backup in {self.directory}: {stores} encrypted store(s), "
            f"{len(self.files) - stores} other file(s); audit log of {self.audit_size} entries "
            "verified"
        )


def kind_of(config: AnyConfig) -> str:
    return "broker" if isinstance(config, BrokerConfig) else "connector"


def _member(config: AnyConfig) -> str:
    return config.broker_id if isinstance(config, BrokerConfig) else config.member_id


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _is_store(path: Path) -> bool:
    return path.suffix == ".db"


def _data_files(directory: Path) -> list[Path]:
    return sorted(
        p
        for p in directory.iterdir()
        if p.is_file() and not p.name.endswith(_SKIP_SUFFIXES) and p.name != MANIFEST
    )


def _copy_store(source: Path, target: Path, key: bytes) -> None:
    """A consistent copy of a live store: the online backup API, same key on both sides."""
    src = open_encrypted(source, key, verify_integrity=False)
    try:
        dst = sqlcipher3.connect(str(target), isolation_level=None)
        try:
            dst.execute("PRAGMA cipher_log_level = NONE")
            dst.execute(f"PRAGMA key = \"x'{key.hex()}'\"")
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()
    with target.open("rb") as fh:
        if fh.read(16) == SQLITE_PLAIN_HEADER:
            raise StoreError(f"the copy of {source.name} is not encrypted: backup aborted")
    os.chmod(target, 0o600)


def _verify_audit(path: Path, key: bytes, keys: MemberKeys) -> int:
    """Re-verify a copied audit log completely; return its size."""
    origin = _origin_of(path, key)
    log = AuditLog(path, key, origin=origin or "unsigned", signing_key=keys.signing_key)
    try:
        report = log.verify()
    finally:
        log.close()
    if not report.ok:
        raise StoreError(f"the audit log in {path.parent} does not verify: {report.summary()}")
    return report.size


def _origin_of(path: Path, key: bytes) -> str | None:
    conn = open_encrypted(path, key)
    try:
        row = conn.execute("SELECT note FROM checkpoints ORDER BY size DESC LIMIT 1").fetchone()
    finally:
        conn.close()
    if row is None:
        return None
    return Checkpoint.parse(parse_note(row[0]).text).origin


def _check_stores(directory: Path, key: bytes) -> None:
    for path in _data_files(directory):
        if _is_store(path):
            open_encrypted(path, key).close()  # the key opens it and its integrity holds


def backup(config: AnyConfig, out: Path) -> BackupReport:
    """Copy ``config``'s data directory to ``out`` (new or empty) and verify the copy."""
    kind = kind_of(config)
    key = load_db_key(config.db_key_file, config.db_key_env)
    keys = MemberKeys.load(config.keys_dir, _member(config))
    data = Path(config.data_dir)
    if not data.is_dir():
        raise ConfigError(f"data_dir {data} does not exist: nothing to back up")
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} is not empty: a backup goes into a new or empty directory")
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(out, 0o700)
    for path in _data_files(data):
        target = out / path.name
        if _is_store(path):
            _copy_store(path, target, key)
        else:
            shutil.copy2(path, target)
            os.chmod(target, 0o600)
    _check_stores(out, key)
    audit = out / AUDIT_FILES[kind]
    size = _verify_audit(audit, key, keys) if audit.exists() else 0
    # Digests last: opening a copy to verify it (WAL mode, schema check) rewrites its header.
    files = [
        {
            "name": path.name,
            "store": _is_store(path),
            "bytes": path.stat().st_size,
            "sha256": _sha256(path),
        }
        for path in _data_files(out)
    ]
    manifest = {
        "format": FORMAT,
        "kind": kind,
        "member": _member(config),
        "created_at": format_ts(time.time()),
        "audit": {"file": AUDIT_FILES[kind], "size": size},
        "files": files,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.chmod(out / MANIFEST, 0o600)
    return BackupReport(out, kind, files, size)


def in_use(directory: Path) -> bool:
    """True when another process has a store in ``directory`` open.

    An open SQLite connection in WAL mode holds a shared lock on its ``-shm`` file; asking for
    an exclusive lock on it (without waiting) is refused while any process holds one. Call this
    only from a process that has none of these stores open itself (POSIX locks are per process).
    """
    if not directory.is_dir():
        return False
    for shm in directory.glob("*.db-shm"):
        try:
            fd = os.open(shm, os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EAGAIN):
                return True
            raise
        else:
            fcntl.lockf(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
    return False


def read_manifest(source: Path) -> dict[str, Any]:
    path = source / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ConfigError(
            f"{source} is not an IBEX backup: {MANIFEST} is missing or unreadable"
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ConfigError(f"{path} is not an {FORMAT} manifest")
    return manifest


def restore(config: AnyConfig, source: Path, *, force: bool = False) -> BackupReport:
    """Replace ``config``'s data directory with the verified backup in ``source``."""
    kind = kind_of(config)
    manifest = read_manifest(source)
    if manifest.get("kind") != kind or manifest.get("member") != _member(config):
        raise ConfigError(
            f"{source} is a backup of {manifest.get('kind')} {manifest.get('member')}, "
            f"not of this {kind} ({_member(config)})"
        )
    key = load_db_key(config.db_key_file, config.db_key_env)
    keys = MemberKeys.load(config.keys_dir, _member(config))
    data = Path(config.data_dir)
    if in_use(data):
        raise StoreError(
            f"{data} is in use by a running server: stop it before restoring (even --force "
            "cannot make replacing open stores safe)"
        )
    if data.exists() and any(data.glob("*.db")) and not force:
        raise ConfigError(
            f"{data} already holds stores: pass --force to replace them "
            "(the current directory is kept beside the restored one)"
        )
    staging = data.with_name(data.name + ".restoring")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(mode=0o700, parents=True)
    try:
        for entry in manifest["files"]:
            name = str(entry["name"])
            if "/" in name or name.startswith("."):
                raise ConfigError(f"{MANIFEST} names an unsafe file {name!r}")
            copied = staging / name
            shutil.copy2(source / name, copied)
            os.chmod(copied, 0o600)
            if _sha256(copied) != entry["sha256"]:
                raise StoreError(f"{source / name} does not match its digest in {MANIFEST}")
        _check_stores(staging, key)
        audit = staging / AUDIT_FILES[kind]
        size = _verify_audit(audit, key, keys) if audit.exists() else 0
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if data.exists():
        kept = data.with_name(f"{data.name}.before-restore-{time.strftime('%Y%m%dT%H%M%S')}")
        data.rename(kept)
    staging.rename(data)
    with contextlib.suppress(OSError):
        os.chmod(data, 0o700)
    return BackupReport(data, kind, list(manifest["files"]), size)
