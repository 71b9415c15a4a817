"""C2SP signed notes, checkpoints and cosignatures, against the specs' and Go's own examples.

The PeterNeumann key and note are the reference vectors of Go's ``golang.org/x/mod/sumdb/note``
(``note_test.go``); the checkpoint and cosignature lines are the examples of C2SP
``tlog-checkpoint`` and ``tlog-cosignature``.
"""

from __future__ import annotations

import base64

import pytest
from nacl.signing import SigningKey

from ibex.errors import SignatureError, UntrustedSigner
from ibex.note import (
    SIG_COSIGNATURE_V1,
    SIG_ED25519,
    Checkpoint,
    NoteError,
    NoteSigner,
    Verifier,
    cosigned_message,
    open_checkpoint,
    parse_note,
    parse_vkey,
    sign_note,
    verify_note,
)

VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
SIG = (
    "\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNX"
    "gKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)
GO_NOTE = TEXT + "\n" + SIG

SPEC_CHECKPOINT = (
    "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
)
SPEC_COSIGNED = (
    SPEC_CHECKPOINT
    + "\n\u2014 example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN"
    "7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
    "\u2014 witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dl"
    "rDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n"
)


def go_signer() -> NoteSigner:
    raw = base64.b64decode(SKEY.split("+", 4)[4])
    assert raw[0] == SIG_ED25519
    return NoteSigner("PeterNeumann", SigningKey(raw[1:]))


def test_go_vkey_parses_and_matches_the_private_key() -> None:
    v = parse_vkey(VKEY)
    assert (v.name, v.sig_type, v.key_id.hex()) == ("PeterNeumann", SIG_ED25519, "c74f20a3")
    assert v.vkey == VKEY
    assert go_signer().verifier == v


def test_go_vkey_manglings_are_refused() -> None:
    b = VKEY.encode()
    for i in range(len(b) + 1):
        for j in range(i + 1, len(b) + 1):
            if (i, j) != (0, len(b)):
                with pytest.raises(NoteError):
                    parse_vkey(b[i:j].decode())
    for i in range(len(b)):
        mangled = bytearray(b)
        mangled[i] += 1
        with pytest.raises(NoteError):
            parse_vkey(mangled.decode())
    for bad in (
        "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ):
        with pytest.raises(NoteError):
            parse_vkey(bad)


def test_signing_reproduces_the_go_note_byte_for_byte() -> None:
    note = sign_note(TEXT.encode(), [go_signer()])
    assert note.render() == GO_NOTE
    verified = verify_note(parse_note(GO_NOTE), [parse_vkey(VKEY)])
    assert [v.verifier.name for v in verified] == ["PeterNeumann"]


def test_tampered_or_untrusted_notes_are_refused() -> None:
    with pytest.raises(SignatureError):
        verify_note(parse_note(GO_NOTE.replace("cryptography", "cryptographY")), [parse_vkey(VKEY)])
    other = NoteSigner("PeterNeumann", SigningKey.generate()).verifier
    with pytest.raises(UntrustedSigner):  # same name, other key id: ignored, then none trusted
        verify_note(parse_note(GO_NOTE), [other])
    with pytest.raises(UntrustedSigner):
        verify_note(parse_note(GO_NOTE), [])


@pytest.mark.parametrize(
    "bad",
    [
        TEXT + SIG,  # no blank line
        TEXT + "\n",  # no signatures
        TEXT + "\n" + SIG.rstrip("\n"),  # missing final newline
        TEXT + "\n" + SIG + SIG,  # duplicate signature
        TEXT + "\n" + SIG.replace("\u2014 ", "- "),
        TEXT + "\n" + SIG.replace("PeterNeumann ", "Peter Neumann "),
        TEXT + "\n" + SIG.replace("AM=", "AM"),  # not base64
        TEXT + "\n" + SIG.replace("AM=", "AN="),  # non-canonical base64
        TEXT.replace("If", "If\x01") + "\n" + SIG,  # control character
        TEXT + "\n" + SIG.replace("x08go/", "x08go\r/"),
        "\u2014 PeterNeumann AAAA\n",
        TEXT + "\n" + "\u2014 X AAAA\n",  # signature shorter than a key id + 1
    ],
)
def test_malformed_notes_are_refused(bad: str) -> None:
    with pytest.raises(NoteError):
        parse_note(bad)


def test_note_size_and_count_limits() -> None:
    with pytest.raises(NoteError):
        parse_note("x" * 20000 + "\n\n" + SIG)
    many = "".join(f"\u2014 k{i} AAAAAAA=\n" for i in range(40))
    with pytest.raises(NoteError):
        parse_note(TEXT + "\n" + many)
    with pytest.raises(NoteError):
        parse_note(b"\xff\xfe\n\n" + SIG.encode())


def test_spec_checkpoint_and_cosignature_examples_parse() -> None:
    note = parse_note(SPEC_COSIGNED)
    cp = Checkpoint.parse(note.text)
    assert (cp.origin, cp.size, len(cp.root)) == ("example.com/behind-the-sofa", 20852163, 32)
    assert cp.body().decode() == SPEC_CHECKPOINT
    witness = note.signatures[1]
    assert witness.name == "witness.example.com/w1" and len(witness.blob) == 72
    timestamp = int.from_bytes(witness.blob[:8], "big")
    assert timestamp == 1679315147  # the time line of the spec's signed-message example
    assert cosigned_message(cp.body(), timestamp).decode() == (
        "cosignature/v1\ntime 1679315147\n" + SPEC_CHECKPOINT
    )
    assert note.render() == SPEC_COSIGNED


@pytest.mark.parametrize(
    "body",
    [
        "o\n01\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",  # leading zero
        "o\n-1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
        "o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I\n",  # padding missing
        "o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jx\n",  # not 32 bytes
        "\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
        "o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n",  # empty extension line
        "o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=",  # no final newline
        "o\n1\n",
    ],
)
def test_malformed_checkpoints_are_refused(body: str) -> None:
    with pytest.raises(NoteError):
        Checkpoint.parse(body)


def test_checkpoint_with_extensions_round_trips() -> None:
    cp = Checkpoint("ibex.example/log", 7, bytes(32), ("ext one", "ext two"))
    assert Checkpoint.parse(cp.body()) == cp


def test_checkpoint_signing_and_cosigning_round_trip() -> None:
    log = NoteSigner("ibex.example/broker", SigningKey.generate())
    witness = NoteSigner("CA-CBSA", SigningKey.generate(), SIG_COSIGNATURE_V1)
    cp = Checkpoint("ibex.example/broker", 42, bytes(range(32)))
    note = sign_note(cp.body(), [log])
    cosig = witness.sign(cp.body(), timestamp=1_700_000_000)
    cosigned = note.with_signatures([cosig, cosig]).render()
    assert cosigned.count("\u2014 CA-CBSA ") == 1
    got, _, verified = open_checkpoint(cosigned, log.verifier, witnesses=[witness.verifier])
    assert got == cp
    assert [(v.verifier.name, v.timestamp) for v in verified] == [
        ("ibex.example/broker", None),
        ("CA-CBSA", 1_700_000_000),
    ]
    assert parse_vkey(witness.verifier.vkey) == witness.verifier
    # A cosignature key cannot stand in for the log key, nor an Ed25519 note key for a witness.
    with pytest.raises(UntrustedSigner):
        open_checkpoint(cosigned, Verifier("CA-CBSA", SIG_ED25519, witness.verifier.public_key))
    # The log's key signing another origin is not this log's checkpoint.
    other = NoteSigner("ibex.example/broker", log.signing_key)
    foreign = sign_note(Checkpoint("elsewhere", 1, bytes(32)).body(), [other]).render()
    with pytest.raises(SignatureError):
        open_checkpoint(foreign, log.verifier)
    # A tampered cosignature timestamp fails the whole note.
    blob = bytearray(cosig.key_id + cosig.blob)
    blob[11] ^= 1
    bad_line = "\u2014 CA-CBSA " + base64.b64encode(bytes(blob)).decode() + "\n"
    with pytest.raises(SignatureError):
        open_checkpoint(note.render() + bad_line, log.verifier, witnesses=[witness.verifier])
