"""``StDevice`` with a host-side copy of every block, for the conformance suite on scsi_debug.

scsi_debug's tape keeps only the length and the first 4 bytes of each block, and refuses blocks
shorter than 512 bytes (its READ BLOCK LIMITS minimum; st answers EINVAL, an LTO drive takes 1
byte). ``TapeDriver`` must read what it wrote (labels, headers, indexes), so on the rig the
conformance suite runs on ``ShadowedStDevice``:

* every operation goes to the real st driver and mt-st first, which decide positions, filemarks,
  end of data and errors;
* the device tracks the logical block address (re-reading it with ``mt tell`` after any mt-level
  command) and keeps each written block by address; a write erases the copies after it;
* a read returns the kept block after checking that the real drive returned a block of the same
  length (padded to 512) with the same first 4 bytes: a block from the wrong place fails with
  ``ShadowMismatch`` instead of passing off the copy;
* a block under 512 bytes goes to the tape padded with zeros, and reads back at its own length.

Loaded as a pytest plugin in the guest (``-p tests.rig.shadow``): it makes
``tapearc.drivers.tape.st.StDevice``, which ``TapeDriver.from_options`` looks up when it builds a
device, this class.
"""

from __future__ import annotations

from typing import Any, Final

import pytest

from tapearc.drivers.tape import st as stdev
from tapearc.drivers.tape.device import TapeStatus

#: scsi_debug's smallest variable block.
MIN_BLOCK: Final = 512
#: Placeholders in the copy: a filemark, and a block this process did not write.
FILEMARK: Final = b"\0filemark"
UNKNOWN: Final = b"\0unknown"


class ShadowMismatch(AssertionError):
    """The real drive returned something else than the copy holds at that address."""


class _Shadow:
    """The copy of one device's tape, shared by every device object for that path."""

    def __init__(self) -> None:
        self.blocks: list[bytes] = []

    def put(self, pos: int, block: bytes) -> None:
        """Record ``block`` at ``pos``; everything after it is erased, as on tape."""
        del self.blocks[pos:]
        self.blocks.extend([UNKNOWN] * (pos - len(self.blocks)))
        self.blocks.append(block)

    def at(self, pos: int) -> bytes | None:
        """The copy at ``pos``, None past the end of what is known (end of data)."""
        return self.blocks[pos] if pos < len(self.blocks) else None


_SHADOWS: dict[str, _Shadow] = {}
_RealStDevice = stdev.StDevice


class ShadowedStDevice(_RealStDevice):
    """The real st device; data read back comes from the checked copy (module docstring)."""

    def __init__(self, device: str, **options: Any) -> None:
        super().__init__(device, **options)
        self._shadow = _SHADOWS.setdefault(device, _Shadow())
        # Per object: another object (a dropped driver closing its descriptor, another
        # "process") may move the tape; a new object asks the drive first.
        self._pos: int | None = None
        self._dirty = False  # a write since the last close: closing writes a filemark

    # --- position ---------------------------------------------------------------------------

    def _position(self) -> int:
        """The current address, asking the drive (``mt tell``) when it is not known."""
        if self._pos is None:
            self._pos = super().tell()
        return self._pos

    def _unknown(self) -> None:
        self._pos = None

    # --- data -------------------------------------------------------------------------------

    def write_block(self, data: bytes | memoryview) -> None:
        block = bytes(data)
        pos = self._pos if self._dirty else self._position()
        padded = block + b"\0" * (MIN_BLOCK - len(block)) if 0 < len(block) < MIN_BLOCK else block
        try:
            super().write_block(padded)
        except Exception:
            # Early warning keeps the block on st, the write after it does not: ask next time.
            if pos is not None:
                self._shadow.put(pos, block)
            self._unknown()
            self._dirty = True
            raise
        if pos is not None:  # unknown only after a failed write: the archive is aborted then
            self._shadow.put(pos, block)
            self._pos = pos + 1
        self._dirty = True

    def read_block(self, max_size: int) -> bytes:
        if self._dirty:
            self.close()  # st ends the file first, as StDevice's read would
        pos = self._position()
        try:
            data = super().read_block(max_size)
        except Exception:
            self._unknown()
            raise
        kept = self._shadow.at(pos)
        if not data:
            if kept == FILEMARK:
                self._pos = pos + 1
            elif kept is None or kept == UNKNOWN:
                # End of data, or a filemark this process did not see written (a dropped
                # device's close): ask the drive next time.
                self._unknown()
            else:
                raise ShadowMismatch(
                    f"{self.device}: read at block {pos} found a filemark or end of data where "
                    "this process wrote a block"
                )
            return b""
        if kept is None or kept in (FILEMARK, UNKNOWN):
            self._unknown()
            raise ShadowMismatch(
                f"{self.device}: block {pos} ({len(data)} bytes) was not written by this "
                "process; scsi_debug holds only its first 4 bytes"
            )
        # What scsi_debug kept: the length (padded as written) and the first 4 bytes.
        expected_head = (kept + b"\0" * 4)[:4]
        if len(data) != max(len(kept), MIN_BLOCK) or data[:4] != expected_head:
            self._unknown()
            raise ShadowMismatch(
                f"{self.device}: block {pos} read back as {len(data)} bytes {data[:4]!r}, "
                f"written as {len(kept)} bytes {kept[:4]!r}"
            )
        self._pos = pos + 1
        return kept[:max_size]

    def close(self) -> None:
        dirty, self._dirty = self._dirty, False
        try:
            super().close()
        except Exception:
            self._unknown()
            raise
        if dirty:
            pos = self._pos
            if pos is None:
                return
            self._shadow.put(pos, FILEMARK)
            self._pos = pos + 1

    # --- mt-level: end the transfer (tracked), run, then re-read the position lazily --------

    def _move(self, action: str, *args: int, lands_at: int | None = None) -> None:
        """Run a positioning command; the position is ``lands_at`` after it, or asked later."""
        self.close()
        self._unknown()
        getattr(super(), action)(*args)
        self._pos = lands_at

    def write_filemarks(self, count: int = 1) -> None:
        self.close()
        pos = self._position()
        try:
            super().write_filemarks(count)
        except Exception:
            self._unknown()
            raise
        for i in range(count):
            self._shadow.put(pos + i, FILEMARK)
        self._pos = pos + count

    def tell(self) -> int:
        self.close()
        self._unknown()
        return self._position()

    def seek(self, block: int) -> None:
        self._move("seek", block, lands_at=block)

    def fsf(self, count: int = 1) -> None:
        self._move("fsf", count)

    def bsf(self, count: int = 1) -> None:
        self._move("bsf", count)

    def eod(self) -> None:
        self._move("eod")

    def rewind(self) -> None:
        self._move("rewind", lands_at=0)

    def load(self) -> None:
        self._move("load", lands_at=0)

    def offline(self) -> None:
        self._move("offline")

    def status(self) -> TapeStatus:
        self.close()
        return super().status()

    def set_variable_blocks(self) -> None:
        self.close()
        super().set_variable_blocks()

    def set_compression(self, on: bool) -> None:
        self.close()
        super().set_compression(on)


def pytest_configure(config: pytest.Config) -> None:
    """Plugin entry: devices built from here on are shadowed."""
    stdev.StDevice = ShadowedStDevice  # type: ignore[misc]


def self_test(device: str) -> None:
    """Prove on a real drive that the copy comes back only for the right block.

    Raises ``AssertionError`` when the shadow returns wrong data or fails to notice a block
    written behind its back. Erases the tape's first blocks.
    """
    import os

    dev = ShadowedStDevice(device, timeout=60, status_timeout=30)
    first, second = b"S001" + os.urandom(600), b"S002" + os.urandom(96)
    dev.rewind()
    dev.write_block(first)
    dev.write_block(second)  # 100 bytes: padded to 512 on scsi_debug
    dev.close()
    dev.rewind()
    assert dev.read_block(4096) == first
    assert dev.read_block(4096) == second
    assert dev.read_block(4096) == b""
    dev.close()  # st allows one open at a time
    # Behind its back: another block at 0 through the plain device.
    plain = _RealStDevice(device, timeout=60, status_timeout=30)
    plain.rewind()
    plain.write_block(b"X001" + bytes(508))
    plain.close()
    dev.rewind()
    try:
        dev.read_block(4096)
    except ShadowMismatch as exc:
        assert "read back as 512 bytes b'X001'" in str(exc), exc
    else:
        raise AssertionError("the shadow returned its copy for a block it did not write")


if __name__ == "__main__":
    import sys

    self_test(sys.argv[1])
    print("shadow self-test passed")
