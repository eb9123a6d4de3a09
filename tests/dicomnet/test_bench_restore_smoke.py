"""A tiny run of bench/bench_restore.py (6 instances, one round) so the benchmark keeps working.

The real measurement (>= 500 instances, interleaved rounds) is run by hand; see bench/README.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tapearc.support.process import run_tool
from tests.support import need_tool

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_restore.py"


def test_bench_restore_runs_every_contender(netns: None, tmp_path: Path) -> None:
    need_tool("storescu", "Orthanc")
    done = run_tool([sys.executable, str(BENCH), "--studies", "2", "--per-study", "3",
                     "--rounds", "1", "--keep", str(tmp_path / "work")], timeout=300)
    lines = done.stdout.splitlines()
    for name in ("storescu", "tapearc-c1", "tapearc-c3"):
        [line] = [ln for ln in lines if ln.startswith(f"{name} ")]
        assert "instances/s" in line and "1 TB in" in line, line
    assert sum(ln.startswith("ratio tapearc-c") for ln in lines) == 2
