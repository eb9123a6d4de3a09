"""One scripted run of ``TapeDevice`` operations, written as a normalized transcript.

The same script runs on the real st driver (``StDevice`` on ``/dev/nst0`` in the rig VM, with
scsi_debug's emulated drive and mt-st) and on ``VirtualTapeDevice``; ``test_transcript.py``
compares the two, so vtape cannot drift from the real driver unnoticed.

A transcript line is ``<id> <operation> -> <result>``. Ids are ``<section>.<nn>``, stable within
a section. Results are normalized to what both devices can answer alike:

* ``ok``, an integer (``tell``), or ``<n> bytes <tag>`` for a read: scsi_debug keeps only the
  first 4 bytes of each block, so a read is its length and those 4 bytes (the tag);
* ``<ErrorClass> <ERRNO>`` for an exception: the class from ``tapearc.errors`` and the errno
  named by the exception (``errno`` attribute, cause, or its text), ``-`` when none;
* ``file=F block=B partition=P blocksize=S density=0xD FLAGS`` for ``status``.

Lines starting with ``#`` are comments: ``#!`` lines name the device, kernel and mt-st version
(not compared), ``## `` lines are section titles.

Run: ``python -m tests.rig.scenario --device /dev/nst0 --out FILE`` (in the VM) or
``--device vtape`` (a fresh virtual cartridge in a temporary folder, sized like scsi_debug's tape).
"""

from __future__ import annotations

import argparse
import errno
import os
import platform
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tapearc.drivers.tape.device import TapeDevice, TapeStatus
from tapearc.errors import MediumFull

#: scsi_debug's tape (Linux >= 6.15, drivers/scsi/scsi_debug.c): TAPE_UNITS = 10000 units, each
#: a block (any length), a filemark or the EOD mark; early warning TAPE_EW = 20 units before the
#: end. The fill section writes 512-byte blocks from BOT; vtape counts bytes of its cartridge file
#: (8-byte header, 5-byte record header per block), so this capacity and margin put early warning
#: on the same block as on scsi_debug. Other block sizes do not scale alike (allowed difference).
SCSI_DEBUG_UNITS = 10000
SCSI_DEBUG_EW_UNITS = 20
FILL_BLOCK = 512
VTAPE_FILE_HEADER = 8
VTAPE_RECORD_HEADER = 5
VTAPE_CAPACITY = VTAPE_FILE_HEADER + SCSI_DEBUG_UNITS * (VTAPE_RECORD_HEADER + FILL_BLOCK)
VTAPE_EARLY_WARNING = SCSI_DEBUG_EW_UNITS * (VTAPE_RECORD_HEADER + FILL_BLOCK)
#: Upper bound of the fill loop: more than the tape holds, so it always meets early warning.
FILL_LIMIT = SCSI_DEBUG_UNITS + 100
MIB = 1024 * 1024

_ERRNO_BY_TEXT = {os.strerror(code): name for code, name in errno.errorcode.items()}
_ERRNO_NAME = re.compile(r"\b(E[A-Z]{2,})\b")


def error_text(exc: BaseException) -> str:
    """``<Class> <ERRNO>`` for an exception, the errno found in it or ``-``."""
    return f"{type(exc).__name__} {errno_of(exc) or '-'}"


def errno_of(exc: BaseException) -> str | None:
    """The errno an exception stands for: its ``errno``, its cause's, or one named in its text."""
    seen: BaseException | None = exc
    while seen is not None:
        code = getattr(seen, "errno", None)
        if isinstance(code, int) and code in errno.errorcode:
            return errno.errorcode[code]
        seen = seen.__cause__ or seen.__context__
    text = str(exc)
    for found in _ERRNO_NAME.findall(text):
        if hasattr(errno, found):
            return str(found)
    for message, name in _ERRNO_BY_TEXT.items():
        if message in text:
            return name
    return None


def status_text(status: TapeStatus) -> str:
    """A status as one line of its fields and flag names."""
    flags = " ".join(status.flags) or "(none)"
    return (
        f"file={status.file_number} block={status.block_number} partition={status.partition} "
        f"blocksize={status.block_size} density=0x{status.density_code:x} {flags}"
    )


def block(tag: str, size: int) -> bytes:
    """A block of ``size`` bytes starting with the 4-character ``tag`` (what scsi_debug keeps)."""
    head = tag.encode("ascii")
    assert len(head) == 4, tag
    filler = bytes((i * 7 + 1) % 251 for i in range(251))
    body = (filler * (size // len(filler) + 1))[: max(size - 4, 0)]
    return (head + body)[:size]


def read_text(data: bytes) -> str:
    """A read result: length and tag."""
    if not data:
        return "0 bytes"
    return f"{len(data)} bytes {data[:4].decode('ascii', 'replace')}"


@dataclass
class Transcript:
    """Runs steps on a device and collects the lines."""

    device: TapeDevice
    lines: list[str]
    section: str = ""
    counter: int = 0

    def title(self, section: str, text: str) -> None:
        """Start a section (its steps are ``section.01``, ``section.02``...)."""
        self.section = section
        self.counter = 0
        self.lines.append(f"## {section}: {text}")

    def step(self, op: str, action: Callable[[], object]) -> object:
        """Run one operation and record its normalized result; exceptions are results too."""
        self.counter += 1
        try:
            value = action()
        except Exception as exc:  # every error is a transcript result
            result = error_text(exc)
            value = exc
        else:
            result = normalize(value)
        self.lines.append(f"{self.section}.{self.counter:02d} {op} -> {result}")
        return value

    # Shorthands for the operations the scenario repeats.
    def write(self, tag: str, size: int) -> object:
        data = block(tag, size)
        return self.step(f"write_block {tag} {size}", lambda: self.device.write_block(data))

    def read(self, max_size: int = MIB) -> object:
        return self.step(f"read_block {max_size}", lambda: self.device.read_block(max_size))

    def tell(self) -> object:
        return self.step("tell", self.device.tell)

    def status(self) -> object:
        return self.step("status", self.device.status)

    def close(self) -> object:
        return self.step("close", self.device.close)


def normalize(value: object) -> str:
    """The transcript form of an operation's return value."""
    if value is None:
        return "ok"
    if isinstance(value, bytes | bytearray):
        return read_text(bytes(value))
    if isinstance(value, TapeStatus):
        return status_text(value)
    return str(value)


def run(device: TapeDevice) -> list[str]:
    """The scenario. Starts from a freshly loaded, empty tape; returns the transcript lines."""
    t = Transcript(device, [])
    d = device

    t.title("start", "drive as found, then load")
    t.status()
    t.step("load", d.load)
    t.status()
    t.read()  # a blank tape: end of data at BOT
    t.read()
    t.tell()
    t.status()
    t.step("set_variable_blocks", d.set_variable_blocks)
    t.step("set_compression off", lambda: d.set_compression(False))
    t.tell()

    t.title("write", "three files: close writes one filemark, weof after a write adds one more")
    t.write("A001", 10240)
    t.write("A002", 10240)
    t.write("A003", 512)
    t.close()
    t.tell()
    t.status()
    t.write("B001", 65536)
    t.step("write_filemarks 1", lambda: d.write_filemarks(1))
    t.tell()
    t.status()
    t.write("C001", MIB)
    t.close()
    t.close()  # a second close writes nothing more
    t.tell()
    t.step("eod", d.eod)
    t.tell()
    t.status()

    t.title("read", "read everything back: filemarks read empty once, end of data twice, then EIO")
    t.step("rewind", d.rewind)
    t.status()
    for _ in range(4):
        t.read()
    t.status()
    for _ in range(8):
        t.read()
    t.status()
    t.tell()

    t.title("eodread", "reading at end of data reached by eod and by fsf")
    t.step("eod", d.eod)
    t.read()
    t.read()
    t.tell()
    t.step("rewind", d.rewind)
    t.step("fsf 4", lambda: d.fsf(4))
    t.status()
    t.read()
    t.read()
    t.read()
    t.tell()

    t.title("small", "a read buffer smaller than the block")
    t.step("rewind", d.rewind)
    t.read(512)
    t.read(10240)
    t.tell()
    t.read(100)

    t.title("space", "fsf/bsf, including past either end")
    t.step("rewind", d.rewind)
    t.step("fsf 1", lambda: d.fsf(1))
    t.tell()
    t.status()
    t.read()
    t.step("rewind", d.rewind)
    t.step("fsf 5", lambda: d.fsf(5))
    t.tell()
    t.status()
    t.step("bsf 1", lambda: d.bsf(1))
    t.tell()
    t.status()
    t.step("bsf 2", lambda: d.bsf(2))
    t.tell()
    t.status()
    t.step("seek 1", lambda: d.seek(1))
    t.step("bsf 1", lambda: d.bsf(1))
    t.tell()
    t.status()
    t.step("fsf 3", lambda: d.fsf(3))
    t.tell()
    t.status()
    t.read()

    t.title("seek", "seek to blocks, filemarks and past end of data")
    t.step("seek 2", lambda: d.seek(2))
    t.tell()
    t.status()
    t.read()
    t.read()
    t.tell()
    t.step("seek 3", lambda: d.seek(3))
    t.read()
    t.tell()
    t.step("seek 9", lambda: d.seek(9))
    t.status()
    t.read()
    t.step("seek 0", lambda: d.seek(0))
    t.status()
    t.step("seek 50", lambda: d.seek(50))
    t.tell()
    t.status()

    t.title("overwrite", "writing in the middle erases what follows")
    t.step("seek 4", lambda: d.seek(4))
    t.write("D001", 1024)
    t.close()
    t.tell()
    t.step("eod", d.eod)
    t.tell()
    t.status()
    t.step("rewind", d.rewind)
    t.step("fsf 1", lambda: d.fsf(1))
    t.read()
    t.read()
    t.read()

    t.title("mixed", "reading right after writing; filemarks at end of data")
    t.step("eod", d.eod)
    t.write("E001", 4096)
    t.read()
    t.close()
    t.tell()
    t.status()
    t.step("write_filemarks 2", lambda: d.write_filemarks(2))
    t.tell()
    t.status()
    t.step("bsf 1", lambda: d.bsf(1))
    t.tell()
    t.read()
    t.tell()

    t.title("limits", "block sizes at and past the drive's limits")
    t.step("eod", d.eod)
    t.write("F001", 100)
    t.write("F002", 511)
    t.write("F003", 512)
    t.write("F004", MIB + 512)
    t.close()
    t.tell()

    t.title("compression", "compression mode page")
    t.step("set_compression on", lambda: d.set_compression(True))
    t.status()
    t.step("set_compression off", lambda: d.set_compression(False))

    t.title("fill", f"fill from BOT with {FILL_BLOCK}-byte blocks until early warning")
    t.step("rewind", d.rewind)
    t.step(f"write_block x{FILL_BLOCK} until error", lambda: _fill(d))
    t.write("G001", FILL_BLOCK)
    t.write("G002", FILL_BLOCK)
    t.close()
    t.tell()
    t.status()
    t.step("seek 9979", lambda: d.seek(9979))
    t.read()
    t.read()
    t.read()
    t.step("rewind", d.rewind)
    t.read()
    t.write("H001", 512)
    t.close()
    t.tell()

    t.title("offline", "unload, status while offline, load")
    t.step("offline", d.offline)
    t.status()
    t.step("load", d.load)
    t.status()
    t.tell()
    t.read()
    t.step("rewind", d.rewind)
    t.status()
    return t.lines


@dataclass(frozen=True)
class Step:
    """One parsed transcript line."""

    op: str
    result: str


def parse(text: str) -> dict[str, Step]:
    """Transcript text to ``{id: Step}``; ``ValueError`` on a malformed or duplicated line."""
    steps: dict[str, Step] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        ident, _, rest = line.partition(" ")
        op, sep, result = rest.partition(" -> ")
        if not sep or not op or "." not in ident:
            raise ValueError(f"transcript line {number} is not '<id> <op> -> <result>': {line!r}")
        if ident in steps:
            raise ValueError(f"transcript line {number} repeats step id {ident}")
        steps[ident] = Step(op, result)
    return steps


def compare(
    real: str, virtual: str, allowed: dict[str, str], names: tuple[str, str] = ("real st", "vtape")
) -> list[str]:
    """Problems between a real and a virtual transcript, given the allowed differences.

    A problem is a step that differs and is not in ``allowed``, a step present in only one
    transcript or with another operation (the two did not run the same scenario), and an entry
    of ``allowed`` whose step no longer differs (so the list of exceptions cannot go stale).
    ``names`` label the two sides in the messages.
    """
    ours, theirs = parse(real), parse(virtual)
    problems: list[str] = []
    for ident in ours.keys() | theirs.keys():
        if ident not in ours or ident not in theirs:
            where = names[0] if ident in ours else names[1]
            problems.append(f"{ident}: only in the {where} transcript (scenario versions differ)")
    for ident, step in ours.items():
        other = theirs.get(ident)
        if other is None:
            continue
        if other.op != step.op:
            problems.append(f"{ident}: operation {step.op!r} ({names[0]}) vs {other.op!r} ({names[1]})")
        elif other.result != step.result and ident not in allowed:
            problems.append(f"{ident} {step.op}: {names[0]} -> {step.result} | {names[1]} -> {other.result}")
        elif other.result == step.result and ident in allowed:
            problems.append(
                f"{ident} {step.op}: listed as an allowed difference ({allowed[ident]}) but both "
                f"give {step.result}; remove it from the list"
            )
    return sorted(problems, key=_step_order(ours))


def _step_order(steps: dict[str, Step]) -> Callable[[str], tuple[int, str]]:
    order = {ident: n for n, ident in enumerate(steps)}

    def key(problem: str) -> tuple[int, str]:
        ident = problem.split(" ", 1)[0].rstrip(":")
        return order.get(ident, len(order)), problem

    return key


def _fill(device: TapeDevice) -> str:
    """Write FILL_BLOCK-byte blocks until one fails; say how many went through and why."""
    data = block("FILL", FILL_BLOCK)
    for count in range(FILL_LIMIT):
        try:
            device.write_block(data)
        except MediumFull as exc:
            return f"{count} ok, then {error_text(exc)}"
    return f"{FILL_LIMIT} ok, no early warning"


def header(device: TapeDevice, kind: str) -> list[str]:
    """The ``#!`` lines naming what produced a transcript (not compared)."""
    lines = [
        "# tapearc tape transcript, written by tests/rig/scenario.py",
        f"#! device: {device.name} ({kind})",
        f"#! kernel: {platform.release()}",
        f"#! date: {time.strftime('%Y-%m-%d', time.gmtime())}",
    ]
    if kind == "StDevice":
        from tapearc.support.process import run_tool

        done = run_tool(["mt", "--version"], timeout=10, check=False)
        version = (done.stdout or done.stderr).strip().splitlines()
        lines.append(f"#! mt: {version[0] if version else 'unknown'}")
        vendor = Path("/sys/class/scsi_tape/st0/device/vendor")
        model = Path("/sys/class/scsi_tape/st0/device/model")
        if vendor.is_file() and model.is_file():
            lines.append(f"#! drive: {vendor.read_text().strip()} {model.read_text().strip()}")
        params = Path("/sys/module/scsi_debug/parameters")
        if params.is_dir():
            values = " ".join(
                f"{name}={(params / name).read_text().strip()}"
                for name in ("ptype", "delay")
                if (params / name).is_file()
            )
            lines.append(f"#! scsi_debug: {values}")
    return lines


@contextmanager
def open_device(spec: str) -> Iterator[tuple[TapeDevice, str]]:
    """``vtape`` (a blank cartridge sized like scsi_debug's tape) or a /dev/nstN path."""
    if spec == "vtape":
        from tapearc.drivers.tape.vdevice import VirtualTapeDevice

        with tempfile.TemporaryDirectory(prefix="rig-vtape-") as tmp:
            vdev = VirtualTapeDevice(
                Path(tmp),
                name="vtape",
                capacity=VTAPE_CAPACITY,
                early_warning=VTAPE_EARLY_WARNING,
            )
            vdev.insert("RIG001")
            try:
                yield vdev, "VirtualTapeDevice"
            finally:
                vdev.remove()
    else:
        from tapearc.drivers.tape.st import StDevice

        sdev = StDevice(spec)
        try:
            yield sdev, "StDevice"
        finally:
            sdev.close()


def transcript(spec: str) -> tuple[list[str], float]:
    """Run the scenario on ``spec``; the full transcript (header included) and its duration."""
    with open_device(spec) as (device, kind):
        start = time.monotonic()
        lines = header(device, kind) + run(device)
        return lines, time.monotonic() - start


def main(argv: list[str] | None = None) -> int:
    """Run the scenario on a device and write its transcript."""
    parser = argparse.ArgumentParser(prog="python -m tests.rig.scenario", description=main.__doc__)
    parser.add_argument("--device", required=True, help="/dev/nstN, or vtape")
    parser.add_argument("--out", type=Path, help="transcript file (default: stdout)")
    args = parser.parse_args(argv)
    lines, seconds = transcript(args.device)
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.write_text(text)
    else:
        sys.stdout.write(text)
    print(f"scenario on {args.device}: {len(lines)} lines in {seconds:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
