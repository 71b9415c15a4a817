"""Member keys: an Ed25519 signing key and an X25519 encryption key per member.

Key ids are derived from the public key (the first 16 bytes of its SHA-256, in hex), never chosen,
so a key id cannot be claimed by a second key. Private key files are written ``0600`` and refused
when group or world can read them, as OpenSSH does.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nacl.public import PrivateKey, PublicKey
from nacl.signing import SigningKey, VerifyKey

from ibex.errors import BadInput, KeyFileError
from ibex.jsonio import dumps, loads_strict

MEMBER_ID_RE = re.compile(r"^[A-Z0-9]{2,8}(-[A-Z0-9]{2,24}){1,3}$")
KEY_FILE_MAX_BYTES = 4096
KEY_FORMAT = "ibex-key-v1"


def key_id(public_key: bytes) -> str:
    """The key id of a raw 32-byte public key: hex of the first 16 bytes of its SHA-256."""
    if len(public_key) != 32:
        raise BadInput("a public key is 32 bytes")
    return hashlib.sha256(public_key).digest()[:16].hex()


def check_member_id(member: str) -> str:
    if not isinstance(member, str) or not MEMBER_ID_RE.fullmatch(member):
        raise BadInput(
            "a member id is upper-case letters and digits in dash-separated parts, "
            "e.g. CA-CBSA or US-USCG"
        )
    return member


def b64decode_strict(text: object, *, what: str, size: int | None = None) -> bytes:
    """Decode standard base64 with padding, refusing anything else."""
    if not isinstance(text, str):
        raise BadInput(f"{what} must be a base64 string")
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise BadInput(f"{what} is not valid base64") from None
    if size is not None and len(raw) != size:
        raise BadInput(f"{what} must be {size} bytes, not {len(raw)}")
    return raw


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass(frozen=True, slots=True)
class PublicKeys:
    """What a member publishes: its id and two public keys."""

    member: str
    signing: bytes
    encryption: bytes

    @property
    def signing_keyid(self) -> str:
        return key_id(self.signing)

    @property
    def encryption_keyid(self) -> str:
        return key_id(self.encryption)

    def verify_key(self) -> VerifyKey:
        return VerifyKey(self.signing)

    def box_key(self) -> PublicKey:
        return PublicKey(self.encryption)

    def to_json(self) -> dict[str, Any]:
        return {
            "member": self.member,
            "signing": {
                "algorithm": "ed25519",
                "public_key": b64(self.signing),
                "keyid": self.signing_keyid,
            },
            "encryption": {
                "algorithm": "x25519",
                "public_key": b64(self.encryption),
                "keyid": self.encryption_keyid,
            },
        }

    @classmethod
    def from_json(cls, obj: object) -> PublicKeys:
        if not isinstance(obj, dict):
            raise BadInput("public keys must be a JSON object")
        member = check_member_id(obj.get("member"))  # type: ignore[arg-type]
        parts: dict[str, bytes] = {}
        for part, alg in (("signing", "ed25519"), ("encryption", "x25519")):
            entry = obj.get(part)
            if not isinstance(entry, dict) or entry.get("algorithm") != alg:
                raise BadInput(f"public keys: {part!r} must be an {alg} key object")
            raw = b64decode_strict(entry.get("public_key"), what=f"{part} public key", size=32)
            if "keyid" in entry and entry["keyid"] != key_id(raw):
                raise BadInput(f"public keys: {part} keyid does not match the key")
            parts[part] = raw
        return cls(member=member, signing=parts["signing"], encryption=parts["encryption"])


@dataclass(frozen=True, slots=True)
class MemberKeys:
    """A member's private keys. Never serialised except to its own 0600 key files."""

    member: str
    signing_key: SigningKey
    encryption_key: PrivateKey

    @classmethod
    def generate(cls, member: str) -> MemberKeys:
        return cls(check_member_id(member), SigningKey.generate(), PrivateKey.generate())

    @property
    def public(self) -> PublicKeys:
        return PublicKeys(
            member=self.member,
            signing=bytes(self.signing_key.verify_key),
            encryption=bytes(self.encryption_key.public_key),
        )

    @property
    def signing_keyid(self) -> str:
        return key_id(bytes(self.signing_key.verify_key))

    # --- files -------------------------------------------------------------------------------

    @staticmethod
    def paths(directory: Path, member: str) -> tuple[Path, Path, Path]:
        return (
            directory / f"{member}.ed25519.key",
            directory / f"{member}.x25519.key",
            directory / f"{member}.public.json",
        )

    def save(self, directory: Path, *, overwrite: bool = False) -> list[Path]:
        """Write the two private key files (0600) and the public key file (0644)."""
        directory.mkdir(parents=True, exist_ok=True)
        sign_path, box_path, pub_path = self.paths(directory, self.member)
        for path, alg, raw in (
            (sign_path, "ed25519", bytes(self.signing_key)),
            (box_path, "x25519", bytes(self.encryption_key)),
        ):
            body = {"format": KEY_FORMAT, "member": self.member, "algorithm": alg}
            body["private_key"] = b64(raw)
            _write_private(path, dumps(body) + b"\n", overwrite=overwrite)
        pub_path.write_bytes(dumps(self.public.to_json()) + b"\n")
        pub_path.chmod(0o644)
        return [sign_path, box_path, pub_path]

    @classmethod
    def load(cls, directory: Path, member: str) -> MemberKeys:
        check_member_id(member)
        sign_path, box_path, _ = cls.paths(directory, member)
        seed = _read_private(sign_path, member=member, algorithm="ed25519")
        box = _read_private(box_path, member=member, algorithm="x25519")
        return cls(member, SigningKey(seed), PrivateKey(box))


def load_public(path: Path) -> PublicKeys:
    """Read a ``<member>.public.json`` file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read public key file {path}: {exc.strerror}") from None
    try:
        return PublicKeys.from_json(
            loads_strict(data, max_bytes=KEY_FILE_MAX_BYTES, what=str(path))
        )
    except BadInput as exc:
        raise KeyFileError(f"{path}: {exc.detail}") from None


def _write_private(path: Path, data: bytes, *, overwrite: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{path} exists; refusing to overwrite a private key") from None
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_secret_file(path: Path, *, what: str, max_bytes: int = KEY_FILE_MAX_BYTES) -> bytes:
    """Read a secret file, refusing one that group or others may read or that is too large."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise KeyFileError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise KeyFileError(f"cannot read {what} {path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(f"{what} {path} is not a regular file")
    if st.st_mode & 0o077:
        raise KeyFileError(
            f"{what} {path} is readable by group or others "
            f"(mode {stat.S_IMODE(st.st_mode):o}); run: chmod 600 {path}"
        )
    if st.st_size > max_bytes:
        raise KeyFileError(f"{what} {path} is larger than {max_bytes} bytes")
    return path.read_bytes()


def _read_private(path: Path, *, member: str, algorithm: str) -> bytes:
    data = read_secret_file(path, what="private key file")
    try:
        obj = loads_strict(data, max_bytes=KEY_FILE_MAX_BYTES, what=str(path))
        if not isinstance(obj, dict) or obj.get("format") != KEY_FORMAT:
            raise BadInput(f"not an {KEY_FORMAT} key file")
        if obj.get("algorithm") != algorithm:
            raise BadInput(f"expected an {algorithm} key, found {obj.get('algorithm')!r}")
        if obj.get("member") != member:
            raise BadInput(f"the key belongs to {obj.get('member')!r}, not {member!r}")
        return b64decode_strict(obj.get("private_key"), what="private key", size=32)
    except BadInput as exc:
        raise KeyFileError(f"{path}: {exc.detail}") from None
