"""Regression (review finding, fixed).

One damaged block must not abort a whole recall batch: the other studies are recalled,
the damaged one is reported (recall --json still prints), and the recall is audited."""
import os
import subprocess
import sys
from pathlib import Path

from tapearc.jobs.nightly import run_nightly
from tapearc.jobs.recall import recall
from tests.jobs.site import PASSPHRASE, make_site
from tests.synth import generate_studies


def _damage_first_archive(site) -> None:
    tape = site.root / "vtapes" / "A00001.vtape"
    raw = bytearray(tape.read_bytes())
    raw[70_000] ^= 0x40
    tape.write_bytes(bytes(raw))


def _site(tmp_path: Path):
    site = make_site(tmp_path / "site", max_archive="100 KiB")
    site.label("A00001", "A")
    site.label("B00001", "B")
    studies = generate_studies(site.pacs, 3, instances_per_study=2, pixel_bytes=30_000)
    assert run_nightly(site.settings).exit_code == 0
    _damage_first_archive(site)
    return site, studies


def test_damaged_study_does_not_abort_the_batch(tmp_path: Path) -> None:
    site, studies = _site(tmp_path)
    with site.catalog() as cat:
        audits_before = cat.query("SELECT COUNT(*) AS n FROM audit WHERE action='recall'")[0]["n"]
        try:
            results = recall(site.settings, cat, [s.study_uid for s in studies],
                             tmp_path / "out", identities=[site.identity])
        except Exception as exc:
            raise AssertionError(f"whole batch aborted by {type(exc).__name__}: {exc}") from None
        assert cat.query("SELECT COUNT(*) AS n FROM audit WHERE action='recall'")[0]["n"] == \
            audits_before + 1
    # the damaged study was read again from pool B's loaded copy
    assert sum(r.verified for r in results) == 3, [r.as_json() for r in results]
    assert sum(bool(r.notes) for r in results) == 1


def test_recall_json_is_printed_when_one_study_is_damaged(tmp_path: Path) -> None:
    site, studies = _site(tmp_path)
    from tapearc.jobs.cartridge import eject_drive

    eject_drive(site.settings, "db")  # no other copy at hand: the damage must be reported
    env = {**os.environ, "TAPEARC_PASSPHRASE": PASSPHRASE}
    out = subprocess.run([sys.executable, "-m", "tapearc", "--config", str(site.config), "recall",
                          *[s.study_uid for s in studies], "--to", str(tmp_path / "o"), "--json"],
                         env=env, capture_output=True, text=True, timeout=120)
    print(out.returncode, out.stdout[-500:], out.stderr[-500:])
    assert out.returncode == 65
    assert out.stdout.strip().startswith("{"), "no JSON document for the two good studies"
