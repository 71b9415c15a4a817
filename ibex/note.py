"""C2SP signed notes, tlog checkpoints and Ed25519 tlog cosignatures (``cosignature/v1``).

A checkpoint is three lines (origin, decimal tree size, base64 root hash) plus optional extension
lines; the log signs it as a signed note with Ed25519 (signature type ``0x01``); witnesses add
timestamped cosignatures (type ``0x04``) over ``cosignature/v1\\ntime <T>\\n`` + the checkpoint.
Key ids are ``SHA-256(name || 0x0A || type || public key)[:4]``; verifier keys travel as C2SP
``vkey`` strings ``name+<hex key id>+base64(type || public key)``.

Parsing is strict and fails closed: a size limit, exact newlines, no control characters,
canonical base64, no repeated signature; unknown signers are ignored as the spec requires, a
known signer whose signature fails rejects the whole note, and at least one trusted signature
must verify.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from ibex.errors import BadInput, SignatureError, UntrustedSigner
from ibex.merkle import HASH_SIZE

SIG_ED25519 = 0x01
SIG_COSIGNATURE_V1 = 0x04
MAX_NOTE_BYTES = 16 * 1024
MAX_SIGNATURES = 32
MAX_TIMESTAMP = (1 << 63) - 1
COSIGNATURE_HEADER = b"cosignature/v1\n"
_DASH = "\u2014 "
_SIZE_RE = re.compile(r"0|[1-9][0-9]{0,19}")
_BAD_NAME_RE = re.compile(r"[\s+]")
_CONTROL_RE = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")


class NoteError(BadInput):
    """A signed note, checkpoint or verifier key that is malformed."""

    code = "note-malformed"
    title = "Malformed signed note"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise NoteError(f"{what} is not valid base64") from None
    if _b64(raw) != text:  # only the one canonical encoding is accepted
        raise NoteError(f"{what} is not canonical base64")
    return raw


def check_key_name(name: str) -> str:
    if not isinstance(name, str) or not name or _BAD_NAME_RE.search(name):
        raise NoteError("a key name must be non-empty, without spaces or '+'")
    if _CONTROL_RE.search(name) or "\n" in name:
        raise NoteError("a key name must not contain control characters")
    return name


def compute_key_id(name: str, sig_type: int, public_key: bytes) -> bytes:
    """``SHA-256(name || 0x0A || type || public key)[:4]`` (C2SP signed-note)."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([sig_type]) + public_key).digest()[:4]


# --- checkpoints ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A tlog checkpoint body: the tree head a log commits to."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def body(self) -> bytes:
        lines = [self.origin, str(self.size), _b64(self.root), *self.extensions]
        return ("\n".join(lines) + "\n").encode()

    @classmethod
    def parse(cls, body: bytes | str) -> Checkpoint:
        try:
            text = body.decode("utf-8") if isinstance(body, bytes) else body
        except UnicodeDecodeError:
            raise NoteError("a checkpoint is UTF-8 text") from None
        if not text.endswith("\n"):
            raise NoteError("a checkpoint ends with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise NoteError("a checkpoint has an origin, a size and a root hash line")
        origin, size, root, *ext = lines
        if not origin or _CONTROL_RE.search(text):
            raise NoteError("the checkpoint origin line is empty or has control characters")
        if not _SIZE_RE.fullmatch(size) or int(size) >= 1 << 63:
            raise NoteError("the checkpoint size is not a decimal without leading zeroes")
        raw = _unb64(root, "the checkpoint root hash")
        if len(raw) != HASH_SIZE:
            raise NoteError(f"the checkpoint root hash must be {HASH_SIZE} bytes")
        if any(not line for line in ext):
            raise NoteError("checkpoint extension lines must not be empty")
        return cls(origin=origin, size=int(size), root=raw, extensions=tuple(ext))


# --- signed notes -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NoteSignature:
    """One signature line: key name, 4-byte key id, and the signature blob after the id."""

    name: str
    key_id: bytes
    blob: bytes

    def line(self) -> str:
        return f"{_DASH}{self.name} {_b64(self.key_id + self.blob)}\n"


@dataclass(frozen=True, slots=True)
class Note:
    """A note text (ending in a newline) and its signature lines."""

    text: str
    signatures: tuple[NoteSignature, ...]

    def render(self) -> str:
        return self.text + "\n" + "".join(s.line() for s in self.signatures)

    def with_signatures(self, extra: Iterable[NoteSignature]) -> Note:
        """This note with ``extra`` signatures appended, skipping any it already carries."""
        have = {(s.name, s.key_id) for s in self.signatures}
        added: list[NoteSignature] = []
        for sig in extra:
            if (sig.name, sig.key_id) not in have:
                have.add((sig.name, sig.key_id))
                added.append(sig)
        return Note(self.text, self.signatures + tuple(added))


def parse_note(data: bytes | str, *, max_bytes: int = MAX_NOTE_BYTES) -> Note:
    """Split a signed note into text and signature lines, refusing anything malformed."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if len(raw) > max_bytes:
        raise NoteError(f"the note is larger than {max_bytes} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise NoteError("the note is not valid UTF-8") from None
    if _CONTROL_RE.search(text):
        raise NoteError("the note contains control characters other than newline")
    split = text.rfind("\n\n")
    if split < 0 or not text.endswith("\n"):
        raise NoteError("a note is text, a blank line, then signature lines, each ending in \\n")
    body, sig_block = text[: split + 1], text[split + 2 :]
    lines = sig_block[:-1].split("\n") if sig_block else []
    if not lines:
        raise NoteError("the note has no signatures")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"the note has more than {MAX_SIGNATURES} signatures")
    sigs: list[NoteSignature] = []
    seen: set[tuple[str, bytes]] = set()
    for line in lines:
        if not line.startswith(_DASH):
            raise NoteError("a signature line starts with an em dash and a space")
        name, sep, blob = line[len(_DASH) :].partition(" ")
        if not sep:
            raise NoteError("a signature line is a key name, a space and a base64 signature")
        check_key_name(name)
        decoded = _unb64(blob, f"the signature by {name}")
        if len(decoded) < 5:
            raise NoteError(f"the signature by {name} is too short")
        sig = NoteSignature(name=name, key_id=decoded[:4], blob=decoded[4:])
        if (sig.name, sig.key_id) in seen:
            raise NoteError(f"the note carries two signatures by {name}")
        seen.add((sig.name, sig.key_id))
        sigs.append(sig)
    return Note(text=body, signatures=tuple(sigs))


# --- keys -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Verifier:
    """A trusted public key: a name, a signature type and a 32-byte Ed25519 key."""

    name: str
    sig_type: int
    public_key: bytes

    def __post_init__(self) -> None:
        check_key_name(self.name)
        if self.sig_type not in (SIG_ED25519, SIG_COSIGNATURE_V1):
            raise NoteError("only Ed25519 (0x01) and cosignature/v1 (0x04) keys are supported")
        if len(self.public_key) != 32:
            raise NoteError("an Ed25519 public key is 32 bytes")

    @property
    def key_id(self) -> bytes:
        return compute_key_id(self.name, self.sig_type, self.public_key)

    @property
    def vkey(self) -> str:
        payload = _b64(bytes([self.sig_type]) + self.public_key)
        return f"{self.name}+{self.key_id.hex()}+{payload}"

    def check(self, text: bytes, sig: NoteSignature) -> int | None:
        """Verify ``sig`` over the note ``text``; return the cosignature time, if any.

        Raises :class:`~ibex.errors.SignatureError` when the signature does not verify.
        """
        timestamp: int | None = None
        if self.sig_type == SIG_COSIGNATURE_V1:
            if len(sig.blob) != 8 + 64:
                raise SignatureError(f"the cosignature by {self.name} is not 72 bytes")
            timestamp = int.from_bytes(sig.blob[:8], "big")
            if timestamp > MAX_TIMESTAMP:
                raise SignatureError(f"the cosignature by {self.name} has an impossible time")
            message, signature = cosigned_message(text, timestamp), sig.blob[8:]
        else:
            if len(sig.blob) != 64:
                raise SignatureError(f"the signature by {self.name} is not 64 bytes")
            message, signature = text, sig.blob
        try:
            VerifyKey(self.public_key).verify(message, signature)
        except BadSignatureError:
            raise SignatureError(f"the signature by {self.name} does not verify") from None
        return timestamp


def parse_vkey(vkey: str) -> Verifier:
    """Parse a C2SP verifier key string ``name+hexid+base64(type||key)``."""
    if not isinstance(vkey, str) or _CONTROL_RE.search(vkey) or "\n" in vkey:
        raise NoteError("a verifier key is one line of text")
    parts = vkey.split("+", 2)
    if len(parts) != 3 or not re.fullmatch(r"[0-9a-f]{8}", parts[1]):
        raise NoteError("a verifier key is name+<8 hex digits>+<base64 key>")
    name, hexid, payload = parts
    raw = _unb64(payload, "the verifier key")
    if len(raw) != 33:
        raise NoteError("a verifier key holds a type byte and a 32-byte Ed25519 key")
    verifier = Verifier(name=name, sig_type=raw[0], public_key=raw[1:])
    if verifier.key_id.hex() != hexid:
        raise NoteError("the verifier key id does not match its name and key")
    return verifier


@dataclass(frozen=True, slots=True)
class NoteSigner:
    """A private Ed25519 key that signs notes (``0x01``) or cosigns checkpoints (``0x04``)."""

    name: str
    signing_key: SigningKey
    sig_type: int = SIG_ED25519

    @property
    def verifier(self) -> Verifier:
        return Verifier(self.name, self.sig_type, bytes(self.signing_key.verify_key))

    def sign(self, text: bytes, *, timestamp: int | None = None) -> NoteSignature:
        if not text.endswith(b"\n"):
            raise NoteError("note text ends with a newline")
        key_id = self.verifier.key_id
        if self.sig_type == SIG_COSIGNATURE_V1:
            if timestamp is None or not 0 <= timestamp <= MAX_TIMESTAMP:
                raise NoteError("a cosignature needs a POSIX timestamp")
            sig = self.signing_key.sign(cosigned_message(text, timestamp)).signature
            return NoteSignature(self.name, key_id, timestamp.to_bytes(8, "big") + sig)
        return NoteSignature(self.name, key_id, self.signing_key.sign(text).signature)


def cosigned_message(checkpoint_body: bytes, timestamp: int) -> bytes:
    """What an Ed25519 cosignature/v1 signs: header, time line, then the checkpoint body."""
    return COSIGNATURE_HEADER + b"time %d\n" % timestamp + checkpoint_body


def sign_note(text: bytes, signers: Sequence[NoteSigner]) -> Note:
    if not signers:
        raise NoteError("a note needs at least one signer")
    return Note(text.decode(), tuple(s.sign(text) for s in signers))


@dataclass(frozen=True, slots=True)
class Verified:
    """A signature line that verified against a trusted key (and its cosignature time)."""

    verifier: Verifier
    signature: NoteSignature
    timestamp: int | None


def verify_note(note: Note, trusted: Iterable[Verifier]) -> list[Verified]:
    """The signatures on ``note`` from ``trusted`` keys, all verified.

    Unknown signers are ignored; a known signer whose signature fails rejects the note; no
    verified trusted signature at all is :class:`~ibex.errors.UntrustedSigner`.
    """
    by_id = {(v.name, v.key_id): v for v in trusted}
    if not by_id:
        raise UntrustedSigner("no trusted keys were given: refusing to accept any note")
    text = note.text.encode()
    out: list[Verified] = []
    for sig in note.signatures:
        verifier = by_id.get((sig.name, sig.key_id))
        if verifier is not None:
            out.append(Verified(verifier, sig, verifier.check(text, sig)))
    if not out:
        raise UntrustedSigner("the note carries no signature from a trusted key")
    return out


def open_checkpoint(
    data: bytes | str, log: Verifier, *, witnesses: Iterable[Verifier] = ()
) -> tuple[Checkpoint, Note, list[Verified]]:
    """Parse a signed checkpoint, requiring the log's signature; return it with its cosigners.

    The checkpoint's origin must be the log's key name, so a note from another log signed by
    the same key is not mistaken for this log's.
    """
    note = parse_note(data)
    log_sig = verify_note(note, [log])
    checkpoint = Checkpoint.parse(note.text)
    if checkpoint.origin != log.name:
        raise SignatureError(f"the checkpoint is for log {checkpoint.origin!r}, not {log.name!r}")
    witness_list = [w for w in witnesses if w.sig_type == SIG_COSIGNATURE_V1]
    cosigs: list[Verified] = []
    if witness_list:
        known = {(w.name, w.key_id) for w in witness_list}
        if any((s.name, s.key_id) in known for s in note.signatures):
            cosigs = verify_note(note, witness_list)
    return checkpoint, note, log_sig + cosigs
