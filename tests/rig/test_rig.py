"""The rig itself, and the driver conformance suite run on the real st driver in it.

The conformance suite (tests/drivers/test_conformance.py, ``tape`` medium: ``TapeDriver`` over
``StDevice`` on ``/dev/nst0`` with the real mt-st) runs inside the session's VM; this file reads
its JUnit report. The other tests check the rig's parts: the kernel cache, the initramfs, and a
boot of the bare initramfs (busybox, mt-st) that returns a guest command's status and output.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tapearc.support.process import run_tool
from tests.rig import vm
from tests.rig.conftest import RigRun, need_rig

#: At least this many conformance tests must pass on the real driver (the suite has ~21 for the
#: tape medium; content checks skip on scsi_debug's 4-byte blocks).
MIN_CONFORMANCE_PASSED = 10


def junit_cases(path: Path) -> list[tuple[str, str, str]]:
    """(test name, outcome, message) for each test case of a JUnit XML report."""
    cases = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for kind in ("failure", "error", "skipped"):
            child = case.find(kind)
            if child is not None:
                outcome = kind
                lines = (child.get("message") or "").splitlines()
                message = lines[0][:300] if lines else ""
                break
        cases.append((case.get("name", "?"), outcome, message))
    return cases


# --- no VM needed ------------------------------------------------------------------------------


def test_missing_kernel_cache_is_reported(tmp_path: Path) -> None:
    assert vm.find_kernel(tmp_path) is None
    (tmp_path / "kernel" / "current" / "modules").mkdir(parents=True)
    (tmp_path / "kernel" / "current" / "vmlinuz").write_bytes(b"x")
    assert vm.find_kernel(tmp_path) is None  # no module list, no version: not usable


def test_junit_report_is_read(tmp_path: Path) -> None:
    report = tmp_path / "r.xml"
    report.write_text(
        '<testsuites><testsuite name="s">'
        '<testcase name="a[tape]"/>'
        '<testcase name="b[tape]"><failure message="boom&#10;more">tb</failure></testcase>'
        '<testcase name="c[tape]"><skipped message="needs x"/></testcase>'
        "</testsuite></testsuites>"
    )
    assert junit_cases(report) == [
        ("a[tape]", "passed", ""),
        ("b[tape]", "failure", "boom"),
        ("c[tape]", "skipped", "needs x"),
    ]


def test_initramfs_holds_busybox_mt_st_modules_and_init(tmp_path: Path) -> None:
    kernel = need_rig()
    image = vm.build_initramfs(kernel, tmp_path / "initramfs.cpio")
    listing = run_tool(["cpio", "-t", "--quiet", "-F", str(image)], timeout=60).stdout.split()
    assert {"init", "bin/busybox", "usr/local/bin/mt-st", "lib/modules/order"} <= set(listing)
    # Not as "mt": busybox sh would run its own applet for that name anyway.
    assert "usr/local/bin/mt" not in listing
    for module in kernel.module_order():
        assert f"lib/modules/{module}.ko" in listing
    assert {"st", "scsi_debug", "9p", "9pnet_virtio"} <= set(kernel.module_order())
    assert any(name.endswith("libc.so.6") for name in listing)


# --- in the VM ---------------------------------------------------------------------------------


@pytest.mark.rig
def test_bare_initramfs_boot_returns_output_and_kills_at_the_timeout(tmp_path: Path) -> None:
    """Busybox initramfs only (no host share): mt-st answers, busybox's mt is another tool, and
    a command that outlives its timeout is killed and reported as such."""
    kernel = need_rig()
    image = vm.build_initramfs(kernel, tmp_path / "initramfs.cpio")
    result = vm.boot(
        "mt-st -f /dev/nst0 status; echo mt-st-rc=$?; mt -f /dev/nst0 status; "
        "echo busybox-mt-rc=$?; sleep 60; echo never",
        kernel=kernel,
        initramfs=image,
        out_dir=tmp_path / "out",
        timeout=4,
        hostfs=False,
    )
    assert result.returncode == 137, result.output  # SIGKILL from the guest's timeout
    assert "never" not in result.output
    assert "SCSI 2 tape drive:" in result.output
    assert "General status bits on" in result.output
    assert "mt-st-rc=0" in result.output
    # busybox's mt has no "status": the pitfall the initramfs layout avoids.
    assert "busybox-mt-rc=0" not in result.output
    assert result.timings["tape"] >= result.timings["init"] > 0
    assert f"kernel={kernel.version}" in result.console


@pytest.mark.rig
def test_guest_that_never_runs_the_command_is_an_error(tmp_path: Path) -> None:
    """A broken initramfs: the kernel panics, QEMU stops, and boot() says so with the console."""
    kernel = need_rig()
    broken = tmp_path / "broken.cpio"
    broken.write_bytes(b"070701" + b"0" * 200)
    with pytest.raises(vm.RigError, match="without the guest command's status") as err:
        vm.boot(
            "true",
            kernel=kernel,
            initramfs=broken,
            out_dir=tmp_path / "out",
            timeout=5,
            hostfs=False,
        )
    assert "Kernel panic" in str(err.value)


@pytest.mark.rig
def test_session_boot_ran_every_phase(rig_run: RigRun) -> None:
    assert rig_run.result.returncode == 0, rig_run.result.output
    phases = rig_run.text("phases").split()[::2]
    assert phases == ["scenario", "shadow", "conformance", "end"], rig_run.text("phases")


@pytest.mark.rig
def test_shadow_returns_its_copy_only_for_the_block_it_wrote(rig_run: RigRun) -> None:
    """tests/rig/shadow.py's self-test on /dev/nst0: round trip, then a block written behind
    its back must raise ShadowMismatch."""
    assert rig_run.rc("shadow") == 0, rig_run.text("shadow.log")
    assert "shadow self-test passed" in rig_run.text("shadow.log")


@pytest.mark.rig
def test_conformance_suite_passes_on_the_real_driver(rig_run: RigRun) -> None:
    report = rig_run.out / "conformance.xml"
    assert report.is_file(), rig_run.text("conformance.log")
    cases = junit_cases(report)
    assert cases, rig_run.text("conformance.log")
    assert all(name.endswith("]") and "[tape" in name for name, _, _ in cases), cases
    bad = [c for c in cases if c[1] in ("failure", "error")]
    skipped = [c for c in cases if c[1] == "skipped"]
    passed = [c for c in cases if c[1] == "passed"]
    summary = "\n".join(f"{name}: {outcome}: {message}" for name, outcome, message in bad + skipped)
    assert not bad, f"{len(bad)} conformance test(s) fail on the real st driver:\n{summary}"
    # A skip for want of a blank tape would mean the rig did not set TAPEARC_TEST_TAPE_ERASE.
    assert not [c for c in skipped if "TAPEARC_TEST_TAPE_ERASE" in c[2]], summary
    assert len(passed) >= MIN_CONFORMANCE_PASSED, summary
    assert rig_run.rc("conformance") == 0, rig_run.text("conformance.log")[-3000:]
