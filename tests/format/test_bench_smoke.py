"""A tiny run of bench/bench_write_stream.py (a few MB, one round) so the bench keeps working.

The real measurement (>= 1 GB, interleaved rounds) is run by hand; see bench/README.md.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tapearc.support.process import run_tool
from tests.support import need_tool

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_write_stream.py"


def test_bench_runs_and_reports_both_contenders(tmp_path: Path) -> None:
    need_tool("tar", "openssl", "bash")
    done = run_tool([sys.executable, str(BENCH), "--mb", "3", "--rounds", "1", "--dir",
                     str(tmp_path), "--block-size", "65536", "--json"], timeout=300)  # fmt: skip
    report = json.loads(done.stdout)
    assert report["tar_bytes"] >= 3 * 10**6 and report["files"] >= 5
    for name in ("tapearc", "tapearc-1cpu", "anchor"):
        assert report[name]["MB_per_s"] > 0
    assert report["ratio_tapearc_vs_anchor"] > 0
