"""A fuzzing pass with a fixed time budget over everything that parses bytes from outside.

Targets: the on-media index parser, the TAE1 header parser, the label parser, the virtual tape's
record reader (a cartridge file is bytes someone may hand us) and DICOM ingest. Each starts from
real, valid input (a seed corpus made by the real writers, pydicom's test files) and mutates it:
bit flips, byte runs, truncation, insertion, splices. The promise checked is the one the issue
names: no crash, no hang, only documented errors (``TapearcError`` subclasses; ingest reports
what each file is and never raises).

``TAPEARC_FUZZ_SECONDS`` sets the budget per target (default 6 s; CI uses the default). The
random seed is printed, so a failure is reproduced with ``TAPEARC_FUZZ_SEED``.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import pytest
from pydicom.data import get_testdata_file

from tapearc.drivers.base import Label
from tapearc.errors import TapearcError
from tapearc.format.index import IndexDoc
from tapearc.format.tae import parse_header
from tapearc.ingest.scan import read_file

ORTHANC_FIXTURES = Path(__file__).parents[1] / "ingest" / "fixtures" / "orthanc"

BUDGET = float(os.environ.get("TAPEARC_FUZZ_SECONDS", "6"))
HANG_SECONDS = 5.0


class Hang(Exception):
    """One input took longer than HANG_SECONDS."""


@contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    def fire(signum: int, frame: FrameType | None) -> None:
        raise Hang(f"no answer within {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _rng() -> random.Random:
    seed = int(os.environ.get("TAPEARC_FUZZ_SEED", str(random.randrange(1 << 32))))
    print(f"fuzz seed {seed} (TAPEARC_FUZZ_SEED to replay)")
    return random.Random(seed)


def mutate(data: bytes, rng: random.Random, corpus: list[bytes]) -> bytes:
    """One to four random edits of ``data``."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(7)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:  # flip a bit
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1:  # a run of one byte value (0, 0xFF, or anything)
            run = rng.randint(1, 64)
            buf[pos:pos + run] = bytes([rng.choice((0, 0xFF, rng.randrange(256)))]) * run
        elif op == 2:  # truncate
            del buf[pos:]
        elif op == 3:  # insert random bytes
            buf[pos:pos] = rng.randbytes(rng.randint(1, 32))
        elif op == 4 and buf:  # delete a span
            del buf[pos:pos + rng.randint(1, 64)]
        elif op == 5:  # splice from another corpus entry
            other = rng.choice(corpus)
            start = rng.randrange(len(other) + 1)
            buf[pos:pos + rng.randint(0, 64)] = other[start:start + rng.randint(1, 256)]
        else:  # an interesting integer
            value = rng.choice((0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 1 << 40))
            width = rng.choice((1, 2, 4, 8))
            buf[pos:pos + width] = (value & ((1 << (8 * width)) - 1)).to_bytes(
                width, rng.choice(("little", "big")))
    return bytes(buf)


def fuzz(target: Callable[[bytes], object], corpus: list[bytes],
         allowed: tuple[type[BaseException], ...] = (TapearcError,)) -> int:
    """Run ``target`` on mutants of ``corpus`` for the budget; return how many ran."""
    rng = _rng()
    for seed in corpus:  # the seeds themselves must parse
        with _deadline(HANG_SECONDS):
            target(seed)
    runs = 0
    end = time.monotonic() + BUDGET
    while time.monotonic() < end:
        data = mutate(rng.choice(corpus), rng, corpus)
        try:
            with _deadline(HANG_SECONDS):
                target(data)
        except allowed:
            pass
        except Hang:
            pytest.fail(f"hang on input {data[:200]!r}... ({len(data)} bytes)")
        except Exception as exc:  # anything else is a crash: show the input
            pytest.fail(f"{type(exc).__name__}: {exc} on input {data[:200]!r}... "
                        f"({len(data)} bytes)")
        runs += 1
    assert runs > 0
    return runs


def _index_seed() -> bytes:
    """A valid index, as the write job makes one (every field checked by the parser)."""
    from tapearc.format.tarstream import member_name

    uid = "1.2.826.0.1.3680043.8.498.1"
    return IndexDoc(
        kind="studies", archive_uuid="6f1c8b1e00004000800000000000001a", barcode="A00001",
        pool="A", site="fuzz", created="2026-11-30T00:00:00Z", block_size=65536,
        plaintext_bytes=4096, data_blocks=1, header=b"TAE1" + bytes(60),
        studies=[{"study_uid": uid, "patient_id": "P1", "study_date": "20260101"}],
        series=[{"series_uid": uid + ".1", "study_uid": uid, "modality": "CT"}],
        instances=[{"sop_uid": uid + ".1.1", "series_uid": uid + ".1", "study_uid": uid,
                    "member": member_name(uid, uid + ".1", uid + ".1.1", 1), "data_offset": 512,
                    "length": 1000, "sha256": "0" * 64, "version": 1}],
    ).to_bytes()


def test_index_parser() -> None:
    fuzz(IndexDoc.from_bytes, [_index_seed()])


def test_label_parser() -> None:
    seed = Label(barcode="A00001", pool="A", site="fuzz", media="LTO", block_size=1 << 20,
                 created="2026-11-30T00:00:00Z").to_bytes()
    fuzz(Label.from_bytes, [seed])


def test_stream_header_parser(tmp_path: Path) -> None:
    from tapearc.format.keys import generate_keypair
    from tapearc.format.writer import seal_bytes

    recipient = generate_keypair(tmp_path, "site", "pw", scrypt_log2n=10)
    sealed = seal_bytes(b"x" * 5000, [recipient], 1 << 16)
    fuzz(parse_header, [sealed[: 1 << 16]])


def _cartridge_seed(folder: Path) -> bytes:
    from tapearc.drivers.tape.vdevice import VirtualTapeDevice, cartridge_path

    dev = VirtualTapeDevice(folder, capacity=64 << 20)
    dev.insert("FUZZ01")
    for n in range(3):
        for size in (512, 70_000, 3):
            dev.write_block(bytes([n]) * size)
        dev.write_filemarks(1)
    dev.close()
    return cartridge_path(folder, "FUZZ01").read_bytes()


def test_vtape_record_reader(tmp_path: Path) -> None:
    from tapearc.drivers.tape.vdevice import VirtualTapeDevice, cartridge_path

    seed = _cartridge_seed(tmp_path / "seed")
    folder = tmp_path / "fuzz"
    folder.mkdir()
    path = cartridge_path(folder, "FUZZ02")

    def read_everything(data: bytes) -> None:
        path.write_bytes(data)
        dev = VirtualTapeDevice(folder, capacity=64 << 20)
        try:
            dev.insert("FUZZ02", create=False)
            dev.status()
            for _ in range(64):  # every file, every block, bounded
                block = dev.read_block(1 << 20)
                if not block:
                    try:
                        dev.fsf(1)
                    except TapearcError:
                        break
        finally:
            dev.close()
        # reading never changes a cartridge, whatever it holds (no torn-record "repair")
        assert path.read_bytes() == data

    fuzz(read_everything, [seed])


def test_dicom_ingest(tmp_path: Path) -> None:
    names = ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "JPEG2000.dcm", "emri_small_RLE.dcm")
    corpus = [Path(str(get_testdata_file(n, download=False))).read_bytes() for n in names]
    # Orthanc's compressed attachments (StorageCompression on), captured from Orthanc 1.10.1
    corpus += [p.read_bytes() for p in sorted(ORTHANC_FIXTURES.glob("*.orthanc-zlib"))]
    path = tmp_path / "fuzzed.dcm"

    def ingest_one(data: bytes) -> None:
        path.write_bytes(data)
        # decides what the file is (instance, damaged, opaque, left out): never raises
        read_file(str(path), os.stat(path))

    fuzz(ingest_one, corpus)


@pytest.mark.parametrize("value", ["Infinity", "NaN", "-Infinity", "[1]", "{}", "1e999"])
def test_inputs_the_fuzzer_found(value: str) -> None:
    """Crashers found by this pass (an OverflowError, a TypeError), kept as fixed examples."""
    from tapearc.errors import FormatError

    label = (f'{{"barcode":"A1","block_size":{value},"created":"x","format_version":1,'
             '"magic":"tapearc-label","media":"LTO","pool":"A","site":"s"}')
    with pytest.raises(FormatError):
        Label.from_bytes(label.encode())
    index = _index_seed().replace(b'"block_size":65536', f'"block_size":{value}'.encode())
    with pytest.raises(FormatError):
        IndexDoc.from_bytes(index)
