"""``tapearc decrypt``: one archive stream (a data, index or catalog copy file, one tape file of a
virtual cartridge, or stdin) to its plaintext.

Reads a whole TAE1 stream (a ``NNNNNN.data`` or ``NNNNNN.index`` file of a disk volume, or
``dd if=/dev/nst0 bs=1M`` of one tape file) and writes its plaintext. The small framing header a
driver puts in front of a data or index file (``tapearc.drivers.layout``) is skipped. The stream
must be signed by a trusted signing key before any key is opened; only the private keys the
header names are opened, so only their passphrases are asked for.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from tapearc.format.keys import Identity
    from tapearc.format.signing import Origin


def decrypt_archive(source: Path | BinaryIO, identity_files: Sequence[Path],
                    output: Path | BinaryIO, *, signer_files: Sequence[Path],
                    accept_unsigned: bool = False, tape_file: int = 1) -> Origin:
    """Decrypt ``source`` (a file, tape file ``tape_file`` of a ``.vtape``, or an open stream,
    closed when done) into ``output``: a path gets the plaintext only when it is complete
    (``_decrypt_to``), an open stream as it is decrypted. The stream must be signed by one of
    the signing keys in ``signer_files`` (or be unsigned, with ``accept_unsigned``); returns
    who vouches for it. IntegrityError (65) otherwise, before any passphrase is asked for."""
    from tapearc.errors import UsageError
    from tapearc.format.keys import load_identities, load_trusted_signers
    from tapearc.format.reader import decrypt_stream
    from tapearc.format.signing import Policy

    if not signer_files and not accept_unsigned:
        raise UsageError("no trusted signing key: pass --signer sign-YYYY.pub or set "
                         "keys.trusted_signers")
    trust = Policy(load_trusted_signers(signer_files), accept_unsigned)

    def identities_for(key_ids: list[bytes]) -> list[Identity]:
        return load_identities(identity_files, wanted=key_ids)

    raw = _open_in(source, tape_file) if isinstance(source, Path) else source
    with raw:
        src = _skip_framing(raw)
        if isinstance(output, Path):
            return _decrypt_to(output, lambda dst: decrypt_stream(src, dst, identities_for,
                                                                  trust=trust))
        return decrypt_stream(src, output, identities_for, trust=trust)


def _decrypt_to(output: Path, decrypt: Callable[[BinaryIO], Origin]) -> Origin:
    """Write plaintext (PHI) to ``output``: a regular file appears only when complete, mode
    0600, through a temporary file beside it; a device or pipe is written directly. Whatever
    ``output`` was is never deleted on failure."""
    import stat
    import tempfile

    if output.exists() and not stat.S_ISREG(output.stat().st_mode):
        with output.open("wb") as dst:
            return decrypt(dst)
    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".part", dir=output.parent)
    try:
        with os.fdopen(fd, "wb") as dst:  # mkstemp creates the file 0600
            origin = decrypt(dst)
            dst.flush()
            os.fsync(dst.fileno())
        os.replace(tmp, output)
        return origin
    except BaseException:
        os.unlink(tmp)  # the temporary file only: nothing half-decrypted is left behind
        raise


def _open_in(path: Path, tape_file: int) -> BinaryIO:
    """The stream in ``path``; for a virtual cartridge, tape file ``tape_file`` of it."""
    from typing import cast

    from tapearc.drivers.tape.vdevice import MAGIC
    from tapearc.errors import NotFound

    try:
        src = path.open("rb")
    except OSError as exc:
        raise NotFound(f"cannot read {path}: {exc.strerror}") from None
    if src.read(len(MAGIC)) != MAGIC:
        src.seek(0)
        return src
    src.close()
    return cast(BinaryIO, _TapeFile(path, tape_file))


class _TapeFile:
    """One tape file of a virtual cartridge, block after block, as ``dd`` reads a real tape."""

    def __init__(self, path: Path, number: int) -> None:
        from tapearc.drivers.tape.vdevice import VirtualTapeDevice
        from tapearc.errors import UsageError

        if number < 1:
            raise UsageError("--file must be 1 or more (file 0 is the label)")
        self._dev = VirtualTapeDevice(path.parent, name="decrypt")
        self._dev.insert(path.name.removesuffix(".vtape"), create=False)
        self._dev.rewind()
        self._dev.fsf(number)
        self._pending = b""
        self._done = False

    def readinto(self, buf: memoryview) -> int:
        while not self._pending and not self._done:
            block = self._dev.read_block(16 * 1024 * 1024)
            if not block:
                self._done = True  # the filemark that ends the file
            self._pending = block
        n = min(len(buf), len(self._pending))
        buf[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def read(self, size: int = -1) -> bytes:
        out = bytearray(max(size, 0))
        n = self.readinto(memoryview(out)) if size > 0 else 0
        return bytes(out[:n])

    def __enter__(self) -> _TapeFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._dev.close()


def _skip_framing(src: BinaryIO) -> BinaryIO:
    """Drop a driver's data (``TADA``) or index (``TAIX``) header in front of the stream."""
    from typing import cast

    from tapearc.drivers.layout import INDEX_MAGIC, IndexHeader, data_header, is_data_header

    head = src.read(IndexHeader.SIZE)
    if is_data_header(head):
        head = head[len(data_header(0)) :]
    elif head.startswith(INDEX_MAGIC):
        IndexHeader.from_bytes(head)  # FormatError for an unknown layout version
        head = b""
    return cast(BinaryIO, _Prefixed(head, src))


class _Prefixed:
    """``src`` with ``head`` put back in front; only ``readinto`` (what decrypt_stream uses)."""

    def __init__(self, head: bytes, src: BinaryIO) -> None:
        self._head = memoryview(head)
        self._src = src

    def readinto(self, buf: memoryview) -> int:
        if self._head:
            n = min(len(buf), len(self._head))
            buf[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        return self._src.readinto(buf)  # type: ignore[attr-defined, no-any-return]
