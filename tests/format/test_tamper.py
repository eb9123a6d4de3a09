"""Every way a stream can be damaged or tampered with is detected: exit 65 and a clear message.

Bit flips (every byte of the header block and of a short final chunk, sampled bytes of full
chunks), truncation at every chunk boundary, swapped/repeated/spliced/appended chunks, header
edits with and without a recomputed checksum, an unknown version, and the wrong key.
"""

from __future__ import annotations

import hashlib
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tapearc.errors import EXIT_DATAERR, FormatError, IntegrityError, WrongKeyError
from tapearc.format import tae
from tapearc.format.reader import ArchiveReader, decrypt_stream
from tests.format.helpers import (
    ESCROW,
    P_SMALL,
    SITE,
    STRANGER,
    UNSIGNED_OK,
    pattern,
    seal_blocks,
)

DATA = pattern(3 * P_SMALL + 100, seed=3)
BLOCKS = seal_blocks(DATA)  # header + 3 full chunks + a 116-byte final chunk
HEADER_LEN = len(tae.parse_header(BLOCKS[0]).raw)


def read_all(blocks: list[bytes], who: object = SITE) -> bytes:
    """Decrypt the whole stream the way ``tapearc decrypt`` does."""
    out = io.BytesIO()
    decrypt_stream(io.BytesIO(b"".join(blocks)), out, [who], trust=UNSIGNED_OK)  # type: ignore[list-item]
    return out.getvalue()


def flipped(blocks: list[bytes], block: int, pos: int, mask: int = 0x01) -> list[bytes]:
    changed = bytearray(blocks[block])
    changed[pos] ^= mask
    return [*blocks[:block], bytes(changed), *blocks[block + 1 :]]


def assert_detected(blocks: list[bytes], match: str) -> IntegrityError:
    with pytest.raises(IntegrityError, match=match) as info:
        read_all(blocks)
    assert info.value.exit_code == EXIT_DATAERR
    assert "\n" not in str(info.value)
    return info.value


def test_untouched_stream_reads_back() -> None:
    assert read_all(BLOCKS) == DATA


def test_every_header_byte_flip_is_detected() -> None:
    for pos in range(HEADER_LEN):
        for mask in (0x01, 0x80):
            with pytest.raises(IntegrityError) as info:
                read_all(flipped(BLOCKS, 0, pos, mask))
            assert info.value.exit_code == EXIT_DATAERR


@settings(max_examples=60, deadline=None)
@given(pos=st.integers(HEADER_LEN, len(BLOCKS[0]) - 1), mask=st.integers(1, 255))
def test_padding_flip_is_detected(pos: int, mask: int) -> None:
    assert_detected(flipped(BLOCKS, 0, pos, mask), "padding is not zero")


def test_every_byte_flip_of_the_final_chunk_is_detected() -> None:
    last = len(BLOCKS) - 1
    for pos in range(len(BLOCKS[last])):
        assert_detected(flipped(BLOCKS, last, pos), f"chunk {last - 1} .* failed authentication")


@settings(max_examples=150, deadline=None)
@given(block=st.integers(1, 3), pos=st.integers(0, P_SMALL + 15), mask=st.integers(1, 255))
def test_any_byte_flip_in_a_full_chunk_is_detected(block: int, pos: int, mask: int) -> None:
    assert_detected(flipped(BLOCKS, block, pos, mask), f"chunk {block - 1} .*failed authentication")


@pytest.mark.parametrize("keep", range(2, len(BLOCKS)))
def test_truncation_at_every_chunk_boundary_is_detected(keep: int) -> None:
    assert_detected(BLOCKS[:keep], "is truncated: it ends at chunk")


def test_stream_with_only_its_header_is_truncated() -> None:
    assert_detected(BLOCKS[:1], "no data after its header")


@settings(max_examples=40, deadline=None)
@given(cut=st.integers(0, sum(map(len, BLOCKS[1:])) - 1))
def test_truncation_anywhere_is_detected(cut: int) -> None:
    stream = b"".join(BLOCKS)[: len(BLOCKS[0]) + cut]
    with pytest.raises(IntegrityError):
        read_all([stream])


@pytest.mark.parametrize(("a", "b"), [(1, 2), (2, 3), (1, 3), (3, 4)])
def test_swapped_chunks_are_detected(a: int, b: int) -> None:
    swapped = list(BLOCKS)
    swapped[a], swapped[b] = swapped[b], swapped[a]
    with pytest.raises(IntegrityError, match="chunk"):
        read_all(swapped)


def test_repeated_and_dropped_chunks_are_detected() -> None:
    assert_detected([*BLOCKS[:2], BLOCKS[1], *BLOCKS[2:]], "chunk 1 .*failed authentication")
    assert_detected([BLOCKS[0], *BLOCKS[2:]], "chunk 0 .*failed authentication")


def test_appended_blocks_are_detected() -> None:
    short = seal_blocks(pattern(2 * P_SMALL, seed=9))  # ends with a full final chunk
    assert_detected([*short, short[1]], "final chunk but more blocks follow")


def test_chunk_spliced_from_another_archive_is_detected() -> None:
    other = seal_blocks(DATA)  # same plaintext, same keys: a different file key and uuid
    assert_detected([*BLOCKS[:2], other[2], *BLOCKS[3:]], "chunk 1 .*failed authentication")
    assert_detected([other[0], *BLOCKS[1:]], "chunk 0 .*failed authentication")


def _reseal(header: bytearray) -> bytes:
    """Recompute the unkeyed digest, as an attacker could."""
    header[-8:] = hashlib.sha256(bytes(header[:-8])).digest()[:8]
    return bytes(header)


@pytest.mark.parametrize(
    ("pos", "match"),
    [
        (11, "header MAC mismatch"),  # content type
        (20, "header MAC mismatch"),  # archive uuid
        (40, "header MAC mismatch"),  # payload salt
        (66, "header MAC mismatch"),  # created
        (76 + 11 + 5, "key stanza .* failed authentication"),  # SITE's ephemeral key
        (76 + 91 + 11 + 40, "header MAC mismatch"),  # ESCROW's stanza, not used by SITE
        (HEADER_LEN - 20, "header MAC mismatch"),  # the MAC itself
    ],
)
def test_header_edits_with_a_recomputed_digest_fail_the_mac(pos: int, match: str) -> None:
    header = bytearray(BLOCKS[0][:HEADER_LEN])
    header[pos] ^= 0x04
    with pytest.raises(IntegrityError, match=match) as info:
        ArchiveReader(_reseal(header), [SITE], trust=UNSIGNED_OK)
    assert info.value.exit_code == EXIT_DATAERR


def test_unknown_version_is_refused_with_a_clear_message() -> None:
    block = bytearray(BLOCKS[0])
    block[8] = 2
    with pytest.raises(FormatError, match=r"version 2 is not supported.*upgrade tapearc"):
        read_all([bytes(block), *BLOCKS[1:]])


def test_not_a_tapearc_stream() -> None:
    with pytest.raises(FormatError, match="not a tapearc archive"):
        read_all([b"\0" * 65536])
    with pytest.raises(FormatError, match="not a tapearc archive"):
        ArchiveReader(b"ustar" + bytes(600), [SITE], trust=UNSIGNED_OK)


def test_wrong_key_names_the_key_ids_needed() -> None:
    with pytest.raises(WrongKeyError) as info:
        read_all(BLOCKS, who=STRANGER)
    message = str(info.value)
    assert SITE.key_id.hex() in message and ESCROW.key_id.hex() in message
    assert STRANGER.key_id.hex() in message  # and what was tried
    assert info.value.exit_code == EXIT_DATAERR


def test_edited_key_id_is_reported_as_damage_not_as_a_wrong_key() -> None:
    with pytest.raises(IntegrityError, match="header checksum mismatch") as info:
        ArchiveReader(flipped(BLOCKS, 0, 76 + 3)[0], [SITE], trust=UNSIGNED_OK)
    assert not isinstance(info.value, WrongKeyError)


def test_escrow_key_alone_opens_the_archive() -> None:
    assert read_all(BLOCKS, who=ESCROW) == DATA
