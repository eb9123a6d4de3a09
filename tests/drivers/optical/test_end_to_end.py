"""End to end: the nightly job writes pool A to virtual tape and pool B to discs (xorriso on
``stdio:`` pseudo-drives); discs fill up and form a set; recall works from either pool."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tapearc.catalog import StudyFilter
from tapearc.config import load_settings
from tapearc.jobs.cartridge import eject_drive, load_cartridge
from tapearc.jobs.disc_set import next_barcode, prompt_next_medium
from tapearc.jobs.nightly import run_nightly
from tapearc.jobs.recall import recall
from tapearc.jobs.write import write_pool
from tests.jobs.site import Site, make_site
from tests.jobs.test_end_to_end import recalled_hashes, source_hashes
from tests.support import need_tool
from tests.synth import generate_studies

DISCS = """[drives.db]
driver = "optical"
path = "discs"
media = "BD-R"
capacity = "{capacity}"
session_reserve = "32 KiB"
"""


def optical_site(root: Path, capacity: str) -> Site:
    need_tool("xorriso")
    site = make_site(root, max_archive="300 KiB", block_size="64 KiB")
    text = site.config.read_text()
    # pool B's drive becomes a disc writer; pool A stays on virtual tape
    text = re.sub(r'\[drives\.db\]\ndriver = "vtape"\npath = "vtapes"\ncapacity = "[^"]*"\n',
                  DISCS.format(capacity=capacity), text)
    assert 'driver = "optical"' in text
    text = text.replace('vault = "south"', 'vault = "south"\nmedia = "BD-R"')
    site.config.write_text(text)
    (root / "discs").mkdir()
    site = Site(root, load_settings(site.config), site.identity, site.signer)
    site.label("A00001", "A")
    site.label("B00001", "B")
    return site


def test_nightly_fills_a_disc_set_while_pool_a_goes_to_tape_and_recall_reads_both(
    tmp_path: Path,
) -> None:
    site = optical_site(tmp_path / "site", capacity="1 MiB")
    studies = generate_studies(site.pacs, 6, instances_per_study=2, pixel_bytes=60_000,
                               layout="flat")
    first = run_nightly(site.settings)
    # cron: the first disc fills up; the run says which set and which barcode to label next
    assert first.exit_code == 75, first.as_json()
    need = next(n for n in first.needs if n.startswith("pool B"))
    assert "set of pool B: B00001 full" in need
    assert "tapearc cartridge label B00002 --pool B" in need
    assert first.pools["A"].exit_code == 0 and first.pools["A"].pending == 0
    discs = 1
    report = first
    while report.exit_code == 75 and discs < 6:
        discs += 1
        site.label(f"B{discs:05d}", "B")  # the operator inserts and labels the next disc
        report = run_nightly(site.settings)
    assert report.exit_code == 0, report.as_json()
    assert report.pending == 0 and discs >= 2
    with site.catalog() as cat:
        found = {s["study_uid"]: s["copies"] for s in cat.find_studies(StudyFilter())}
        assert len(found) == 6
        assert all(c["A"] == ["A00001"] and len(c["B"]) == 1 for c in found.values())
        # a study never splits across discs (each is far smaller than a disc)
        disc_of = {uid: c["B"][0] for uid, c in found.items()}
        states = {c["barcode"]: c["state"] for c in cat.cartridges("B")}
        assert states["B00001"] == "full"
        # the nightly verify read tonight's disc archives back (keyless: ciphertext digests)
        disc_archives = [a for b in states for a in cat.archives(b) if a["kind"] == "studies"]
        assert disc_archives and all(a["verify_result"] == "ok" for a in disc_archives)

    out = tmp_path / "out"
    target = studies[0]
    with site.catalog() as cat:
        # both copies' drives loaded: from A (tape)
        [from_a] = recall(site.settings, cat, [target.study_uid], out / "a",
                          identities=[site.identity])
        assert from_a.verified and from_a.cartridge == "A00001"
        # pool A's tape is away: from its disc, once that disc is in the drive
        eject_drive(site.settings, "da")
        load_cartridge(site.settings, cat, disc_of[target.study_uid], "db")
        [from_b] = recall(site.settings, cat, [target.study_uid], out / "b",
                          identities=[site.identity])
    assert from_b.verified and from_b.cartridge == disc_of[target.study_uid]
    expected = set(source_hashes([target])[target.study_uid])
    assert recalled_hashes(out / "a", target.study_uid) == expected
    assert recalled_hashes(out / "b", target.study_uid) == expected


def test_interactive_write_asks_for_the_next_disc_and_goes_on(tmp_path: Path) -> None:
    site = optical_site(tmp_path / "site", capacity="1 MiB")
    generate_studies(site.pacs, 5, instances_per_study=2, pixel_bytes=60_000, layout="flat")
    asked: list[str] = []
    said: list[str] = []

    def operator(question: str) -> str:
        asked.append(question)
        return "" if len(asked) < 5 else "q"  # Enter takes the suggested barcode

    with site.catalog() as cat:
        from tapearc.ingest.scan import ingest

        ingest(cat, [site.pacs], quiet_seconds=0)
        result = write_pool(site.settings, cat, "B",
                            next_medium=prompt_next_medium(site.settings, cat, "B",
                                                           ask=operator, say=said.append))
        assert result.exit_code == 0, result.needs
        assert result.pending == 0
        assert len(result.written) >= 2 and result.written[0] == "B00001"
        assert asked and "[B00002]" in asked[0]
        assert any("set of pool B" in s for s in said)
        assert [c["barcode"] for c in cat.cartridges("B")] == result.written


def test_operator_stops_at_the_prompt_exit_75(tmp_path: Path) -> None:
    site = optical_site(tmp_path / "site", capacity="1 MiB")
    generate_studies(site.pacs, 5, instances_per_study=2, pixel_bytes=60_000, layout="flat")
    with site.catalog() as cat:
        from tapearc.ingest.scan import ingest

        ingest(cat, [site.pacs], quiet_seconds=0)
        result = write_pool(site.settings, cat, "B",
                            next_medium=prompt_next_medium(site.settings, cat, "B",
                                                           ask=lambda q: "q", say=lambda s: None))
        assert result.exit_code == 75 and result.pending > 0
        assert "B00002" in result.needs[0]


@pytest.mark.parametrize(("codes", "expected"), [
    (["B00001", "B00002"], "B00003"), (["PB0009L9"], "PB0010L9"), (["X9"], "X10"),
    (["DISC"], None), ([], None),
])
def test_next_barcode(codes: list[str], expected: str | None) -> None:
    assert next_barcode(codes) == expected
