"""Round trips of the TAE1 stream: whole-stream and random-access reads at random sizes."""

from __future__ import annotations

import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tapearc.errors import FormatError, IntegrityError
from tapearc.format import tae
from tapearc.format.reader import (
    ArchiveReader,
    can_open,
    decrypt_stream,
    needed_key_ids,
    open_bytes,
    read_header_block,
)
from tapearc.format.writer import seal_bytes
from tests.format.helpers import (
    ESCROW,
    P_SMALL,
    SITE,
    SMALL,
    STRANGER,
    UNSIGNED_OK,
    pattern,
    seal_blocks,
)

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Sizes that matter: empty, one byte, around every chunk boundary, and anything in between.
EDGE_SIZES = [0, 1, P_SMALL - 1, P_SMALL, P_SMALL + 1, 2 * P_SMALL, 3 * P_SMALL + 5]
sizes = st.one_of(st.sampled_from(EDGE_SIZES), st.integers(0, 4 * P_SMALL))


def _chunks_for(n: int) -> int:
    return max(1, -(-n // P_SMALL))


@FAST
@given(n=sizes)
def test_round_trip_any_size(n: int) -> None:
    data = pattern(n, seed=n)
    blocks = seal_blocks(data)
    assert len(blocks) == 1 + _chunks_for(n)
    assert all(len(b) == SMALL for b in blocks[:-1])  # only the last block may be short
    for who in (SITE, ESCROW):  # every recipient opens it
        reader = ArchiveReader(blocks[0], [who], trust=UNSIGNED_OK)
        assert b"".join(bytes(c) for c in reader.iter_plaintext(blocks[1:])) == data


@FAST
@given(n=sizes)
def test_seal_bytes_and_decrypt_stream(n: int) -> None:
    data = pattern(n, seed=1)
    stream = seal_bytes(data, [SITE.recipient], SMALL, content=tae.Content.INDEX)
    assert open_bytes(stream, [SITE], trust=UNSIGNED_OK) == data
    out = io.BytesIO()
    decrypt_stream(io.BytesIO(stream), out, [SITE], trust=UNSIGNED_OK)
    assert out.getvalue() == data


@FAST
@given(data=st.data())
def test_random_access_reads_only_the_needed_blocks(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 4 * P_SMALL), label="size")
    plain = pattern(n, seed=2)
    blocks = seal_blocks(plain)
    offset = data.draw(st.integers(0, n - 1), label="offset")
    length = data.draw(st.integers(0, n - offset), label="length")
    reader = ArchiveReader(read_header_block(blocks[0]), [ESCROW], trust=UNSIGNED_OK)
    first, count = reader.span(offset, length)
    if length:
        assert first == 1 + offset // P_SMALL
        assert first + count - 1 == 1 + (offset + length - 1) // P_SMALL
    want = plain[offset : offset + length]
    got = reader.read_range(blocks[first : first + count], first, offset, length, len(blocks))
    assert got == want
    # Without the block count the final flag is found by trial; extra leading blocks are skipped.
    start = max(1, first - 1)
    assert reader.read_range(blocks[start : first + count], start, offset, length, None) == want


def test_range_past_the_end_is_refused() -> None:
    blocks = seal_blocks(pattern(P_SMALL + 10))
    reader = ArchiveReader(blocks[0], [SITE], trust=UNSIGNED_OK)
    with pytest.raises(IntegrityError, match="past the end"):
        reader.read_range(blocks[2:], 2, P_SMALL, 11, None)
    with pytest.raises(IntegrityError, match="truncated"):
        reader.read_range(blocks[1:2], 1, 0, P_SMALL + 5, 3)


def test_header_fields_and_key_ids() -> None:
    blocks = seal_blocks(b"x", recipients=[SITE, ESCROW])
    header = read_header_block(blocks[0])
    assert header[:8] == tae.MAGIC and len(header) == 76 + 2 * 91 + 40
    assert needed_key_ids(header) == [SITE.key_id, ESCROW.key_id]
    assert can_open(header, [STRANGER, ESCROW], trust=UNSIGNED_OK) and \
        not can_open(header, [STRANGER], trust=UNSIGNED_OK)
    parsed = tae.parse_header(header)
    assert (parsed.block_size, parsed.content, parsed.version) == (SMALL, 0, 1)


@pytest.mark.parametrize("size", [1 << 15, (1 << 16) + 1, 1 << 24, 3 << 20])
def test_block_size_must_be_a_power_of_two_in_range(size: int) -> None:
    with pytest.raises(FormatError, match="power of two"):
        seal_blocks(b"x", block_size=size)


def test_default_block_size_is_one_mib() -> None:
    blocks = seal_blocks(pattern(2 * ((1 << 20) - 16)), block_size=1 << 20)
    assert [len(b) for b in blocks] == [1 << 20] * 3


def test_hkdf_matches_the_reference_implementation() -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    for salt in (b"", b"salt" * 8):
        ref = HKDF(hashes.SHA256(), 32, salt or None, b"info").derive(b"ikm")
        assert tae.hkdf(b"ikm", salt, b"info") == ref
