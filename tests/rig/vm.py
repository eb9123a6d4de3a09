"""Boot the tape rig: a Debian kernel >= 6.15 under QEMU TCG with ``scsi_debug ptype=1``.

The kernel comes from the cache that ``tests/rig/fetch-kernel.sh`` fills (no network here). The
initramfs is busybox-static, mt-st as ``/usr/local/bin/mt-st`` (never as ``mt``: busybox sh runs
its own ``mt`` applet for that name whatever PATH says),
the modules listed in the cache, and ``guest/init``. ``boot`` runs one shell command in the guest
(by default in a chroot of the host's ``/``, shared read-only over virtio-9p, so the host's python
and repository are used) and returns its exit status and output; a hard timeout kills QEMU.

By hand: ``python -m tests.rig.vm [--initramfs-only] [--timeout S] -- 'mt-st -f /dev/nst0 status'``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tapearc.errors import ToolTimeout
from tapearc.support.process import run_tool

HERE = Path(__file__).resolve().parent
#: Where fetch-kernel.sh keeps the kernel (override with TAPEARC_RIG_CACHE).
DEFAULT_CACHE = Path("/var/cache/tapearc-rig")
#: scsi_debug parameters besides ptype=1: delay=0 drops the 1-jiffy delay per command, which
#: otherwise makes filling the 10000-unit tape take tens of seconds.
SCSI_DEBUG_ARGS = ("delay=0",)
#: Seconds from QEMU start until the guest command runs, plus shutdown, with slack (measured ~5 s).
BOOT_SLACK = 40.0


class RigError(Exception):
    """The VM did not boot, or did not finish its command; the message holds the console tail."""


@dataclass(frozen=True)
class Kernel:
    """An unpacked kernel in the cache: vmlinuz plus the decompressed modules to load, in order."""

    version: str
    vmlinuz: Path
    modules: Path

    def module_order(self) -> list[str]:
        """Module names in load order (dependencies first), as fetch-kernel.sh wrote them."""
        return (self.modules / "order").read_text().split()


@dataclass(frozen=True)
class VmResult:
    """One guest command's outcome."""

    returncode: int
    output: str
    console: str
    out_dir: Path
    wall_seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    """Guest uptimes in seconds: ``init``, ``tape`` (/dev/nst0 present), ``command``, ``end``."""


#: Read at import: the autouse fixture of tests/conftest.py removes TAPEARC_* before each test.
_CACHE = Path(os.environ.get("TAPEARC_RIG_CACHE") or DEFAULT_CACHE)


def cache_dir() -> Path:
    """The kernel cache directory."""
    return _CACHE


def find_kernel(cache: Path | None = None) -> Kernel | None:
    """The kernel fetch-kernel.sh prepared, or None when the cache has none."""
    current = (cache or cache_dir()) / "kernel" / "current"
    needed = (current / "vmlinuz", current / "modules" / "order", current / "KV")
    if not all(p.is_file() for p in needed):
        return None
    return Kernel(
        version=(current / "KV").read_text().strip(),
        vmlinuz=current / "vmlinuz",
        modules=current / "modules",
    )


def _shared_libraries(program: str) -> list[Path]:
    """The shared objects ``program`` loads (from ldd), including the dynamic loader."""
    done = run_tool(["ldd", program], timeout=30, check=False)
    if "not a dynamic executable" in done.stdout + done.stderr:
        return []
    libs = [Path(m) for m in re.findall(r"(/\S+)\s+\(0x", done.stdout)]
    if not libs:
        raise RigError(f"cannot list the libraries of {program}: {done.stderr.strip()}")
    return libs


def build_initramfs(kernel: Kernel, dest: Path) -> Path:
    """Write an uncompressed newc initramfs to ``dest`` and return it."""
    busybox = shutil.which("busybox")
    mt_st = shutil.which("mt-st")
    if busybox is None or mt_st is None:
        raise RigError("the rig needs busybox-static and mt-st on the host; run tests/rig/prepare.sh")
    if _shared_libraries(busybox):
        raise RigError(f"{busybox} is dynamically linked; install busybox-static")
    with tempfile.TemporaryDirectory(prefix="rig-initramfs-") as tmp:
        root = Path(tmp)
        for sub in ("bin", "dev", "proc", "sys", "tmp", "usr/local/bin", "lib/modules"):
            (root / sub).mkdir(parents=True)
        shutil.copy2(busybox, root / "bin" / "busybox")
        # Only as "mt-st": busybox sh runs its own mt applet for "mt" whatever PATH says.
        shutil.copy2(mt_st, root / "usr" / "local" / "bin" / "mt-st")
        for lib in _shared_libraries(mt_st):
            target = root / lib.relative_to("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(lib.resolve(), target)
        for name in kernel.module_order():
            shutil.copy2(kernel.modules / f"{name}.ko", root / "lib" / "modules" / f"{name}.ko")
        shutil.copy2(kernel.modules / "order", root / "lib" / "modules" / "order")
        shutil.copy2(HERE / "guest" / "init", root / "init")
        (root / "init").chmod(0o755)
        names = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
        dest.unlink(missing_ok=True)
        run_tool(
            ["cpio", "-o", "-H", "newc", "--quiet", "-D", str(root), "-O", str(dest)],
            input_text="\n".join(names) + "\n",
            timeout=60,
        )
    return dest


def boot(
    command: str,
    *,
    kernel: Kernel,
    initramfs: Path,
    out_dir: Path,
    timeout: float = 150.0,
    hostfs: bool = True,
    memory_mb: int = 1024,
) -> VmResult:
    """Boot the VM, run ``command`` (a /bin/sh script) in the guest, return its outcome.

    In the guest ``$RIG_OUT`` is a read-write directory shared with ``out_dir``. ``timeout``
    bounds the guest command; QEMU itself is killed ``BOOT_SLACK`` seconds later.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("rc", "output.log", "timings", "console.log"):
        (out_dir / stale).unlink(missing_ok=True)
    (out_dir / "cmd.sh").write_text(command if command.endswith("\n") else command + "\n")
    console = out_dir / "console.log"
    append = " ".join(
        [
            "console=ttyS0",
            "quiet",
            "loglevel=4",
            "panic=-1",
            f"rig.mode={'hostfs' if hostfs else 'initramfs'}",
            f"rig.sdargs={','.join(SCSI_DEBUG_ARGS)}",
            f"rig.timeout={int(timeout)}",
        ]
    )
    shared = str(out_dir.resolve()).replace(",", ",,")  # QEMU option syntax escapes commas
    shares = ["-virtfs", f"local,path={shared},mount_tag=out,security_model=none,id=out"]
    if hostfs:
        shares += [
            "-virtfs",
            "local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap,id=host",
        ]
    argv = [
        "qemu-system-x86_64",
        # KVM here is kvm-pvm and cannot run a stock kernel (notes/tape.md §3): TCG only.
        "-accel", "tcg,thread=multi",
        "-cpu", "max",
        "-m", str(memory_mb),
        "-smp", "2",
        "-nodefaults",
        "-no-reboot",
        "-display", "none",
        "-monitor", "none",
        "-serial", f"file:{console}",
        "-kernel", str(kernel.vmlinuz),
        "-initrd", str(initramfs),
        "-append", append,
        *shares,
    ]  # fmt: skip
    start = time.monotonic()
    try:
        done = run_tool(argv, timeout=timeout + BOOT_SLACK, check=False)
    except ToolTimeout as exc:
        raise RigError(
            f"the VM did not power off in {timeout + BOOT_SLACK:g} s; console tail:\n{_tail(console)}"
        ) from exc
    wall = time.monotonic() - start
    rc_file = out_dir / "rc"
    if done.returncode != 0 or not rc_file.is_file():
        raise RigError(
            f"qemu exited {done.returncode} without the guest command's status "
            f"({done.stderr.strip()[-300:] or 'no qemu message'}); console tail:\n{_tail(console)}"
        )
    timings: dict[str, float] = {}
    timings_file = out_dir / "timings"
    if timings_file.is_file():
        for line in timings_file.read_text().splitlines():
            key, _, value = line.partition(" ")
            with contextlib.suppress(ValueError):
                timings[key] = float(value)
    output_file = out_dir / "output.log"
    return VmResult(
        returncode=int(rc_file.read_text().strip()),
        output=output_file.read_text(errors="replace") if output_file.is_file() else "",
        console=console.read_text(errors="replace") if console.is_file() else "",
        out_dir=out_dir,
        wall_seconds=wall,
        timings=timings,
    )


def _tail(path: Path, lines: int = 30) -> str:
    if not path.is_file():
        return "(no console output)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def main(argv: list[str] | None = None) -> int:
    """Boot the rig, run a command in the guest, print its output, exit with its status."""
    parser = argparse.ArgumentParser(prog="python -m tests.rig.vm", description=main.__doc__)
    parser.add_argument(
        "--initramfs-only",
        action="store_true",
        help="run in the busybox initramfs instead of a chroot of the host's /",
    )
    parser.add_argument("--timeout", type=float, default=150.0, help="guest command timeout (s)")
    parser.add_argument("--out", type=Path, help="directory shared with the guest as $RIG_OUT")
    parser.add_argument("command", nargs="+", help="shell command run in the guest")
    args = parser.parse_args(argv)
    kernel = find_kernel()
    if kernel is None:
        print(f"no kernel in {cache_dir()}; run tests/rig/prepare.sh", file=sys.stderr)
        return 69
    out = args.out or Path(tempfile.mkdtemp(prefix="rig-out-"))
    out.mkdir(parents=True, exist_ok=True)
    initramfs = build_initramfs(kernel, out / "initramfs.cpio")
    result = boot(
        " ".join(args.command),
        kernel=kernel,
        initramfs=initramfs,
        out_dir=out,
        timeout=args.timeout,
        hostfs=not args.initramfs_only,
    )
    sys.stdout.write(result.output)
    print(
        f"rig: kernel {kernel.version}, guest status {result.returncode}, "
        f"wall {result.wall_seconds:.1f} s, guest timings {result.timings}, out {out}",
        file=sys.stderr,
    )
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
