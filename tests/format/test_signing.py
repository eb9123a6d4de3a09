"""Origin authentication (tapearc.format.signing): the signature stanza, the reader's decision,
and signing key files. The attacker here holds every public key (recipients and signer)."""

from __future__ import annotations

import hashlib
import hmac
import io
import os
import struct
from pathlib import Path

import pytest

from tapearc.errors import ConfigError, IntegrityError
from tapearc.format import signing as sg
from tapearc.format import tae
from tapearc.format.keys import (
    SigningKey,
    generate_keypair,
    generate_signing_key,
    load_identity,
    load_signing_key,
    load_trusted_signers,
)
from tapearc.format.reader import ArchiveReader, decrypt_stream, open_bytes
from tapearc.format.writer import StreamEncryptor, seal_bytes
from tests.format.helpers import ESCROW, SIGNER, SITE, SMALL, TRUST, UNSIGNED_OK, pattern

ATTACKER = SigningKey.from_private_bytes("mallory", hashlib.sha256(b"mallory").digest())
RECIPIENTS = [SITE.recipient, ESCROW.recipient]
PLACE = sg.Binding("A00017L9", 3)


def stream(key: SigningKey | None = SIGNER, place: sg.Binding = PLACE,
           data: bytes = b"dicom" * 1000) -> tuple[bytes, list[bytes]]:
    """(file key, blocks) of a signed archive stream; the file key is drawn first."""
    file_key = os.urandom(32)
    draws = iter([file_key])
    blocks: list[bytes] = []
    enc = StreamEncryptor(lambda b: blocks.append(bytes(b)), RECIPIENTS, block_size=SMALL,
                          content=tae.Content.ARCHIVE, signer=key, binding=place,
                          entropy=lambda n: next(draws, None) or os.urandom(n))
    enc.write(data)
    enc.close()
    return file_key, blocks


def header_of(blocks: list[bytes]) -> bytes:
    return tae.parse_header(blocks[0]).raw


def redigest(raw: bytes) -> bytes:
    """What anyone can do after an edit: fix the unkeyed 8-byte digest."""
    return raw[:-8] + hashlib.sha256(raw[:-8]).digest()[:8]


def remac(body: bytes, file_key: bytes) -> bytes:
    """What the holder of the file key can do: a new MAC and digest over ``body``."""
    mac = hmac.new(tae.hkdf(file_key, b"", b"tapearc/v1/header"), body, hashlib.sha256).digest()
    return redigest(body + mac + bytes(8))


def signature_stanza(header: bytes) -> bytes:
    stanza = tae.parse_header(header).stanzas[-1]
    return header[len(header) - 40 - 11 - len(stanza.body) : len(header) - 40]


def graft(header: bytes, stanza: bytes, file_key: bytes) -> bytes:
    """Append a raw stanza to a header and re-MAC it (header_len and stanza count fixed)."""
    body = bytearray(header[:-40])
    struct.pack_into(">I", body, 12, len(header) + len(stanza))
    struct.pack_into(">H", body, 72, struct.unpack_from(">H", body, 72)[0] + 1)
    return remac(bytes(body) + stanza, file_key)


def test_signed_stream_reads_back_and_names_its_signer_and_place() -> None:
    _, blocks = stream()
    reader = ArchiveReader(blocks[0], [ESCROW], trust=TRUST, barcode="A00017L9", medium_file=3)
    assert reader.origin.status == "signed" and reader.origin.signer == SIGNER.signer
    assert reader.origin.binding == PLACE and reader.origin.label.startswith("signed:")
    assert b"".join(bytes(c) for c in reader.iter_plaintext(blocks[1:])) == b"dicom" * 1000
    # the header grows by the stanza: 11 + 37 + barcode + 64 bytes
    assert len(header_of(blocks)) == 298 + 11 + 37 + 8 + 64


def test_a_reader_that_predates_signing_skips_the_stanza() -> None:
    """The stanza is one more unknown type: the key stanzas and the MAC still work."""
    _, blocks = stream()
    header = tae.parse_header(blocks[0])
    assert header.key_ids == [SITE.key_id, ESCROW.key_id]
    tae.unwrap_file_key(header, [SITE])


def test_unsigned_is_refused_unless_break_glass() -> None:
    _, blocks = stream(key=None)
    with pytest.raises(sg.UnsignedError, match="not signed by this site") as err:
        ArchiveReader(blocks[0], [SITE], trust=TRUST)
    assert err.value.exit_code == 65 and "accept_unsigned" in str(err.value)
    reader = ArchiveReader(blocks[0], [SITE], trust=UNSIGNED_OK)
    assert reader.origin.status == "unsigned" and reader.origin.label == "unsigned"


def test_untrusted_signer_refused_naming_its_key_id() -> None:
    _, blocks = stream(key=ATTACKER)
    with pytest.raises(sg.SignatureError, match="not a trusted signing key") as err:
        ArchiveReader(blocks[0], [SITE], trust=TRUST)
    assert ATTACKER.key_id.hex() in str(err.value) and SIGNER.key_id.hex() in str(err.value)
    # break-glass reads unsigned streams, never badly signed ones
    with pytest.raises(sg.SignatureError):
        ArchiveReader(blocks[0], [SITE], trust=UNSIGNED_OK)


def test_a_trusted_key_id_on_an_attackers_signature_does_not_verify() -> None:
    _, blocks = stream(key=ATTACKER)
    header = bytearray(header_of(blocks))
    start = len(header) - 40 - 11 - len(PLACE.encode()) - 64
    header[start + 1 : start + 9] = SIGNER.key_id
    with pytest.raises(sg.SignatureError, match="does not verify"):
        sg.check_origin(redigest(bytes(header)), TRUST)


def test_every_bit_of_the_signed_bytes_and_signature_matters() -> None:
    _, blocks = stream()
    header = header_of(blocks)
    for pos in range(len(header) - 40):
        for bit in (0, 3, 7):
            bad = bytearray(header)
            bad[pos] ^= 1 << bit
            with pytest.raises(IntegrityError):
                sg.check_origin(redigest(bytes(bad)), TRUST)


def test_an_attackers_header_with_a_genuine_signature_stanza_is_refused() -> None:
    """Same recipients, the attacker's own file key, the site's stanza grafted on."""
    _, genuine = stream()
    evil_key, evil = stream(key=None)
    forged = graft(header_of(evil), signature_stanza(header_of(genuine)), evil_key)
    tae.unwrap_file_key(tae.parse_header(forged), [SITE])  # well-formed and authentic to AEAD
    with pytest.raises(sg.SignatureError, match="does not verify"):
        sg.check_origin(forged, TRUST)


def test_a_stripped_signature_cannot_pass_as_old_format() -> None:
    file_key, blocks = stream()
    header = header_of(blocks)
    stanza = signature_stanza(header)
    body = bytearray(header[: -40 - len(stanza)])
    struct.pack_into(">I", body, 12, len(header) - len(stanza))
    struct.pack_into(">H", body, 72, struct.unpack_from(">H", body, 72)[0] - 1)
    stripped = redigest(bytes(body) + header[-40:])
    # without the file key the MAC no longer matches: refused as an altered header
    with pytest.raises(IntegrityError, match="MAC"):
        ArchiveReader(stripped, [SITE], trust=UNSIGNED_OK)
    # a key holder can re-MAC it, and then it is simply unsigned: refused by default
    with pytest.raises(sg.UnsignedError):
        ArchiveReader(remac(bytes(body), file_key), [SITE], trust=TRUST)


def test_two_signature_stanzas_or_one_not_last_are_refused() -> None:
    file_key, blocks = stream()
    header = header_of(blocks)
    with pytest.raises(sg.SignatureError, match="only one and the last"):
        sg.check_origin(graft(header, signature_stanza(header), file_key), UNSIGNED_OK)
    recipient_stanza = header[76 : 76 + 11 + 80]
    with pytest.raises(sg.SignatureError, match="only one and the last"):
        sg.check_origin(graft(header, recipient_stanza, file_key), UNSIGNED_OK)


def test_a_stream_moved_to_another_cartridge_or_file_is_refused() -> None:
    _, blocks = stream()
    with pytest.raises(sg.BindingError, match="signed for cartridge A00017L9 but is on B1"):
        ArchiveReader(blocks[0], [SITE], trust=TRUST, barcode="B1", medium_file=3)
    with pytest.raises(sg.BindingError, match="medium file 3 but is at file 5"):
        ArchiveReader(blocks[0], [SITE], trust=TRUST, barcode="A00017L9", medium_file=5)


def test_an_index_commits_to_its_plaintext() -> None:
    doc = b'{"format": "tapearc-index"}'
    sealed = seal_bytes(doc, RECIPIENTS, SMALL, content=tae.Content.INDEX, signer=SIGNER,
                        binding=PLACE)
    assert open_bytes(sealed, [SITE], trust=TRUST, barcode="A00017L9", medium_file=3,
                      content=tae.Content.INDEX) == doc
    with pytest.raises(sg.OriginError, match="content type 2, not 1"):
        open_bytes(sealed, [SITE], trust=TRUST, content=tae.Content.ARCHIVE)
    # a key holder re-encrypts other plaintext under the genuine signed header: caught
    origin = sg.check_origin(sealed, TRUST)
    with pytest.raises(sg.BindingError, match="not what its signer wrote"):
        sg.check_plaintext(origin, hashlib.sha256(doc + b" ").digest())
    out = io.BytesIO()
    assert decrypt_stream(io.BytesIO(sealed), out, [ESCROW], trust=TRUST).signer == SIGNER.signer
    assert out.getvalue() == doc
    with pytest.raises(ValueError, match="must commit"):  # never written without one
        StreamEncryptor(lambda b: None, RECIPIENTS, content=tae.Content.INDEX, signer=SIGNER)


def test_decrypt_stream_refuses_before_asking_for_any_key() -> None:
    _, blocks = stream(key=ATTACKER, data=pattern(100_000))
    asked: list[list[bytes]] = []

    def identities(ids: list[bytes]) -> list[object]:
        asked.append(ids)
        return [SITE]

    with pytest.raises(sg.SignatureError):
        decrypt_stream(io.BytesIO(b"".join(blocks)), io.BytesIO(), identities,  # type: ignore[arg-type]
                       trust=TRUST)
    assert asked == []


def test_signed_documents_domain_separation_and_tampering() -> None:
    doc = sg.sign_document(SIGNER, {"a": 1, "b": "x"})
    signer, body = sg.verify_document(doc, [SIGNER.signer], what="a seal")
    assert signer == SIGNER.signer and body == {"a": 1, "b": "x"}
    with pytest.raises(sg.SignatureError, match="does not verify"):
        sg.verify_document({**doc, "a": 2}, [SIGNER.signer], what="a seal")
    with pytest.raises(sg.SignatureError, match="not a trusted signing key"):
        sg.verify_document(sg.sign_document(ATTACKER, {"a": 1}), [SIGNER.signer], what="a seal")
    # a header signature is no document signature, nor the reverse
    _, blocks = stream()
    sig = sg.read_signature(tae.parse_header(blocks[0]))
    assert sig is not None
    with pytest.raises(sg.SignatureError):
        sg.verify(sig.signed, sig.signature, sg.CTX_SEAL, [SIGNER.signer], SIGNER.key_id,
                  what="x")


def test_signing_key_files(tmp_path: Path) -> None:
    signer = generate_signing_key(tmp_path, "sign-2026", "pw", scrypt_log2n=10)
    assert (tmp_path / "sign-2026.pub").read_text().startswith("tapearc-ed25519-v1 ")
    assert (tmp_path / "sign-2026.key").stat().st_mode & 0o777 == 0o600
    assert load_trusted_signers([tmp_path / "sign-2026.pub"]) == (signer,)
    assert load_trusted_signers([tmp_path / "sign-2026.key"]) == (signer,)
    key = load_signing_key(tmp_path / "sign-2026.key", "pw")
    assert key.signer == signer
    with pytest.raises(IntegrityError, match="wrong passphrase"):
        load_signing_key(tmp_path / "sign-2026.key", "nope")
    # an encryption key is never a signing key, nor the reverse
    generate_keypair(tmp_path, "site", "pw", scrypt_log2n=10)
    with pytest.raises(ConfigError, match="not a tapearc signing public key"):
        load_trusted_signers([tmp_path / "site.pub"])
    with pytest.raises(ConfigError, match="not a version 1 ed25519 key"):
        load_signing_key(tmp_path / "site.key", "pw")
    with pytest.raises(ConfigError, match="not a version 1 x25519 key"):
        load_identity(tmp_path / "sign-2026.key", "pw")
    (tmp_path / "sign-2026.key").chmod(0o640)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_signing_key(tmp_path / "sign-2026.key", "pw")
