"""The test vectors in docs/FORMAT.md: the writer reproduces them byte for byte, and a reader
written here from the document's text alone (``cryptography`` primitives, no tapearc code)
opens them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
from pathlib import Path

import pytest

from tapearc.format.reader import ArchiveReader, read_header_block
from tapearc.support.process import run_tool
from tests.format import vectors
from tests.format.helpers import UNSIGNED_OK
from tests.support import need_tool

VECTORS = vectors.parse_vectors(vectors.FORMAT_MD.read_text(encoding="utf-8"))
BY_NAME = {v["name"]: v for v in VECTORS}


def test_the_document_holds_the_four_vectors() -> None:
    assert sorted(BY_NAME) == ["archive", "empty", "signed", "two-full-chunks"]


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_writer_reproduces_the_vector(name: str) -> None:
    vec = BY_NAME[name]
    blocks = vectors.build(vec)
    expected = {k: v for k, v in vec.items() if vectors._is_output(k)}
    assert vectors.outputs(vec, blocks) == expected


def _hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(hashes.SHA256(), 32, salt or None, info).derive(ikm)


def _independent_open(vec: vectors.Vector, who: str) -> bytes:
    """Decrypt the vector's blocks following docs/FORMAT.md section 2 step by step."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import (
        X25519PrivateKey,
        X25519PublicKey,
    )
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    header = bytes.fromhex(vec["header"])
    assert header[:8] == b"\x89TAPEARC" and header[8] == 1 and header[9] == 1
    block_log2, content, header_len = header[10], header[11], struct.unpack(">I", header[12:16])[0]
    assert header_len == len(header)
    uuid, salt = header[16:32], header[32:64]
    assert hashlib.sha256(header[:-8]).digest()[:8] == header[-8:]
    private = X25519PrivateKey.from_private_bytes(bytes.fromhex(vec[f"{who}_private"]))
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    pos, file_key = 76, None
    for _ in range(struct.unpack(">H", header[72:74])[0]):
        stype, key_id, body_len = struct.unpack(">B8sH", header[pos : pos + 11])
        body = header[pos + 11 : pos + 11 + body_len]
        pos += 11 + body_len
        if stype == 1 and key_id == hashlib.sha256(public).digest()[:8]:
            shared = private.exchange(X25519PublicKey.from_public_bytes(body[:32]))
            wrap = _hkdf(shared, body[:32] + public, b"tapearc/v1/X25519")
            file_key = AESGCM(wrap).decrypt(bytes(12), body[32:], None)
    assert file_key is not None and pos == header_len - 40
    mac_key = _hkdf(file_key, b"", b"tapearc/v1/header")
    assert mac_key.hex() == vec["header_mac_key"]
    assert hmac.new(mac_key, header[:pos], hashlib.sha256).digest() == header[pos : pos + 32]
    info = b"tapearc/v1/payload" + bytes([1, block_log2, content]) + uuid
    key = _hkdf(file_key, salt, info)
    assert key.hex() == vec["payload_key"]
    last = int(vec["blocks"]) - 1
    chunk = base64.b64decode(vec[f"block_{last}"])
    nonce = (last - 1).to_bytes(11, "big") + b"\x01"
    return AESGCM(key).decrypt(nonce, chunk, None)


def test_independent_reader_opens_the_archive_vector_with_either_key(tmp_path: Path) -> None:
    vec = BY_NAME["archive"]
    for who in ("site", "escrow"):
        plain = _independent_open(vec, who)
        assert len(plain) == 2048
        assert plain[512 : 512 + 20] == bytes.fromhex(vec["member_body"])
        assert plain[:27] == vec["member"].encode()
    assert _independent_open(BY_NAME["empty"], "site") == b""


def test_archive_vector_plaintext_is_a_tar_gnu_tar_lists(tmp_path: Path) -> None:
    need_tool("tar")
    vec = BY_NAME["archive"]
    (tmp_path / "v.tar").write_bytes(_independent_open(vec, "escrow"))
    listing = run_tool(["tar", "tvf", str(tmp_path / "v.tar")], timeout=30, env={"TZ": "UTC"})
    assert vec["member"] in listing.stdout and " 20 2026-01-01" in listing.stdout


def test_tapearc_reader_opens_the_two_chunk_vector() -> None:
    vec = BY_NAME["two-full-chunks"]
    blocks = vectors.build(vec)
    assert [hashlib.sha256(b).hexdigest() for b in blocks] == [
        vec[f"block_{i}_sha256"] for i in range(int(vec["blocks"]))
    ]
    reader = ArchiveReader(read_header_block(blocks[0]), vectors.identities_of(vec),
                           trust=UNSIGNED_OK)
    plain = b"".join(bytes(c) for c in reader.iter_plaintext(blocks[1:]))
    assert plain == vectors.plaintext_of(vec) and len(blocks[-1]) == 65536


def test_independent_check_of_the_signed_vector() -> None:
    """The signature stanza, parsed and verified from the document's text alone."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    vec = BY_NAME["signed"]
    header = bytes.fromhex(vec["header"])
    public = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(vec["signing_seed"])) \
        .public_key()
    assert public.public_bytes(Encoding.Raw, PublicFormat.Raw).hex() == vec["signer_public"]
    pos, last = 76, None
    for _ in range(struct.unpack(">H", header[72:74])[0]):
        stype, key_id, body_len = struct.unpack(">B8sH", header[pos : pos + 11])
        last = (stype, key_id, header[pos + 11 : pos + 11 + body_len])
        pos += 11 + body_len
    assert last is not None and pos == len(header) - 40
    stype, key_id, body = last
    assert stype == 0x80 and key_id == hashlib.sha256(bytes.fromhex(vec["signer_public"])).digest()[:8]
    medium_file, digest, n = struct.unpack(">I32sB", body[:37])
    assert (medium_file, digest, body[37 : 37 + n].decode()) == \
        (int(vec["medium_file"]), bytes(32), vec["barcode"])
    public.verify(body[-64:], b"tapearc/v1/sig/header\0" + header[: len(header) - 40 - 64])
    # and the archive still opens as any archive does, with either key
    assert _independent_open(vec, "escrow")[512 : 512 + 20] == bytes.fromhex(vec["member_body"])
