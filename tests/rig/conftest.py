"""The rig's session fixture: boot the tape VM once and run everything that needs it inside.

One boot (a few seconds under TCG) runs, in a chroot of the host's ``/`` with the host's python:
the transcript scenario on ``StDevice(/dev/nst0)`` and then the driver conformance suite with
``TAPEARC_TEST_TAPE=/dev/nst0``. The tests in this folder read the results.

Without qemu, busybox-static, mt-st, cpio or the cached kernel the rig tests skip, or fail
under ``TAPEARC_REQUIRE_TOOLS=1`` (CI), which runs ``tests/rig/prepare.sh`` first.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.rig import vm
from tests.support import need_tool

REPO = Path(__file__).resolve().parents[2]
#: The conformance suite the guest runs against /dev/nst0 (its "tape" medium only: vtape and
#: disk run on the host), through tests/rig/shadow.py: scsi_debug keeps 4 bytes of each block,
#: so the bytes read back come from a checked host-side copy (TAPEARC_TEST_TAPE_FAITHFUL=1 is
#: then true). Plugin autoload is off: the hypothesis plugin alone costs seconds under TCG.
CONFORMANCE = "tests/drivers/test_conformance.py"
#: Guest command timeout: the scenario takes ~10 s and the suite ~80 s under TCG on an idle
#: host (README); a loaded host is several times slower.
GUEST_TIMEOUT = 480.0


@dataclass(frozen=True)
class RigRun:
    """What the one boot of a session produced (files in ``out``)."""

    result: vm.VmResult
    kernel: vm.Kernel
    out: Path

    def text(self, name: str) -> str:
        """A result file's text, or a note that the guest did not write it."""
        path = self.out / name
        if not path.is_file():
            return f"(the guest wrote no {name}; guest output:\n{self.result.output[-3000:]})"
        return path.read_text(errors="replace")

    def rc(self, name: str) -> int | None:
        """An exit status the guest script wrote, or None."""
        path = self.out / f"{name}.rc"
        if not path.is_file():
            return None
        return int(path.read_text().strip())


def need_rig() -> vm.Kernel:
    """Skip (or fail under TAPEARC_REQUIRE_TOOLS=1) unless the rig can boot; return the kernel."""
    need_tool("qemu-system-x86_64", "busybox", "mt-st", "cpio", "ldd")
    kernel = vm.find_kernel()
    if kernel is None:
        message = f"needs the rig kernel in {vm.cache_dir()} (run tests/rig/prepare.sh as root)"
        if os.environ.get("TAPEARC_REQUIRE_TOOLS") == "1":
            pytest.fail(message + " (TAPEARC_REQUIRE_TOOLS=1)")
        pytest.skip(message)
    return kernel


def guest_script(python: str) -> str:
    """The shell script the guest runs (in the chroot; ``$RIG_OUT`` is shared with the host)."""
    phase = 'echo "$1 $(cut -d" " -f1 /proc/uptime)" >> "$RIG_OUT/phases"'
    return f"""set -u
cd {REPO}
export PYTHONDONTWRITEBYTECODE=1 TAPEARC_REQUIRE_TOOLS=1
phase() {{ {phase}; }}
phase scenario
{python} -m tests.rig.scenario --device /dev/nst0 --out "$RIG_OUT/real.txt" \\
  > "$RIG_OUT/scenario.log" 2>&1
echo $? > "$RIG_OUT/scenario.rc"
phase shadow
{python} -m tests.rig.shadow /dev/nst0 > "$RIG_OUT/shadow.log" 2>&1
echo $? > "$RIG_OUT/shadow.rc"
phase conformance
TAPEARC_TEST_TAPE=/dev/nst0 TAPEARC_TEST_TAPE_ERASE=1 TAPEARC_TEST_TAPE_FAITHFUL=1 \\
  PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 {python} -m pytest -p no:cacheprovider -p tests.rig.shadow \\
  -q -o addopts= -k "tape and not vtape" \\
  --junitxml="$RIG_OUT/conformance.xml" {CONFORMANCE} > "$RIG_OUT/conformance.log" 2>&1
echo $? > "$RIG_OUT/conformance.rc"
phase end
"""


@pytest.fixture(scope="session")
def rig_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RigRun]:
    """Boot the VM once, run the scenario and the conformance suite in it."""
    kernel = need_rig()
    out = tmp_path_factory.mktemp("rig-out")
    initramfs = vm.build_initramfs(kernel, tmp_path_factory.mktemp("rig") / "initramfs.cpio")
    start = time.monotonic()
    result = vm.boot(
        guest_script(sys.executable),
        kernel=kernel,
        initramfs=initramfs,
        out_dir=out,
        timeout=GUEST_TIMEOUT,
    )
    (out / "host-wall").write_text(f"{time.monotonic() - start:.1f}\n")
    yield RigRun(result, kernel, out)
