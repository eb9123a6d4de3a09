"""Rotation through the command line and the jobs, on a vtape site with a simulated clock."""

from __future__ import annotations

import io
import json
import sqlite3
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from tapearc.catalog import open_catalog
from tapearc.catalog.schema import SCHEMA_VERSION, _v1
from tapearc.errors import PolicyRefused
from tapearc.jobs import rotation as rotation_job
from tapearc.jobs.cartridge import eject_drive, load_cartridge
from tapearc.jobs.catalog import check_catalog
from tapearc.jobs.nightly import run_nightly
from tapearc.jobs.recall import recall
from tapearc.jobs.verify import verify_cartridge
from tapearc.jobs.write import write_pool
from tapearc.support import clock
from tests.jobs.site import Site
from tests.rotation.operator import make_rotation_site, set_clock
from tests.synth import generate_studies


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    """Two studies written to A00001 and B00001 (not yet verified), both onsite in the drives."""
    set_clock(0, 8)
    s = make_rotation_site(tmp_path / "site")
    s.label("A00001", "A")
    s.label("B00001", "B")
    generate_studies(s.pacs, 2, instances_per_study=2, pixel_bytes=5_000)
    set_clock(1, 2)
    assert run_nightly(s.settings).exit_code == 0
    set_clock(1, 9)
    yield s
    clock.set_now(None)


def cli(site: Site, *args: str, stdin: str = "",
        capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run ``tapearc --config SITE args`` in this process (the simulated clock applies)."""
    from tapearc.cli import main

    argv, stdin_was = sys.argv, sys.stdin
    sys.argv = ["tapearc", "--config", str(site.config), *args]
    sys.stdin = io.StringIO(stdin)
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        sys.argv, sys.stdin = argv, stdin_was
    out, err = capsys.readouterr()
    return code, out, err


def verify_both(site: Site) -> None:
    with site.catalog() as cat:
        for code in ("A00001", "B00001"):
            assert not verify_cartridge(site.settings, cat, code,
                                        identities=[site.identity]).failures


def eject_all(site: Site) -> None:
    for drive in site.settings.drives:
        eject_drive(site.settings, drive)


def audit_rows(site: Site) -> list[dict[str, object]]:
    with site.catalog() as cat:
        return cat.query("SELECT * FROM audit ORDER BY id")


def test_unverified_copy_does_not_leave_and_force_is_audited(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    eject_all(site)
    before = len(audit_rows(site))
    code, _, err = cli(site, "cartridge", "move", "A00001", "transit-to:north", capsys=capsys)
    assert code == 75 and "not verified" in err and "--force" in err
    assert len(audit_rows(site)) == before  # nothing recorded
    code, _, err = cli(site, "cartridge", "move", "A00001", "transit-to:north", "--force",
                       capsys=capsys)
    assert code == 2 and "--reason" in err
    code, out, _ = cli(site, "cartridge", "move", "A00001", "transit-to:north", "--force",
                       "--reason", "vault audit today", capsys=capsys)
    assert code == 0 and "FORCED" in out
    row = audit_rows(site)[-1]
    detail = json.loads(str(row["detail"]))
    assert row["action"] == "cartridge.move" and row["subject"] == "A00001"
    assert detail["forced"] is True and detail["reason"] == "vault audit today"
    assert "not verified" in detail["overridden"][0] and detail["scanned"] == "A00001"
    assert row["actor"] and row["at"] == clock.now().isoformat(timespec="seconds")
    code, out, _ = cli(site, "cartridge", "show", "A00001", "--json", capsys=capsys)
    history = json.loads(out)["history"]
    assert [h["location"] for h in history] == ["onsite", "transit-to:north"]
    assert history[-1]["reason"] == "vault audit today"


def test_ship_and_receive_from_a_barcode_scanner(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    verify_both(site)
    code, _, err = cli(site, "rotation", "ship", "A00001", capsys=capsys)
    assert code == 75 and "eject it first" in err  # still in drive da
    eject_all(site)
    code, out, _ = cli(site, "rotation", "ship", "A00001", "B00001", "--json", capsys=capsys)
    assert code == 0
    assert [(m["barcode"], m["from"], m["to"]) for m in json.loads(out)["moved"]] == [
        ("A00001", "onsite", "transit-to:north"), ("B00001", "onsite", "transit-to:south")]
    clock.advance(timedelta(days=1))
    # a scanner: lower case, a blank line, a double read, a misread label, an unknown barcode
    scans = "a00001\n\nA00001\nB00001\r\nB0000#\nZZ9999\n"
    code, out, err = cli(site, "rotation", "receive", capsys=capsys, stdin=scans)
    assert code == 75 and "2 scans not recorded" in err and "ZZ9999" in err
    assert "A00001: transit-to:north -> vault:north" in out
    assert "B00001: transit-to:south -> vault:south" in out
    moves = [json.loads(str(r["detail"])) for r in audit_rows(site)
             if r["action"] == "cartridge.move"]
    assert [m["scanned"] for m in moves[-2:]] == ["a00001", "B00001"]
    # both copies are in two vaults now: nothing is exposed
    code, out, _ = cli(site, "rotation", "plan", "--json", capsys=capsys)
    doc = json.loads(out)
    assert doc["exposure"]["studies"] == 0 and doc["ship"] == [] and doc["overdue"] == []
    # the vault's receipt typed in again is refused as ambiguous and changes nothing
    code, _, err = cli(site, "rotation", "receive", "A00001", capsys=capsys)
    assert code == 75 and "recorded in vault north" in err and "transit-back:north" in err
    with site.catalog() as cat:
        assert cat.cartridge("A00001")["location"] == "vault:north"


def test_both_copies_to_one_vault_is_refused(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    verify_both(site)
    eject_all(site)
    assert cli(site, "rotation", "ship", "A00001", capsys=capsys)[0] == 0
    code, _, err = cli(site, "rotation", "ship", "B00001", "--to", "north", capsys=capsys)
    assert code == 75 and "2 studies on B00001" in err and "never stored in one place" in err
    with site.catalog() as cat:
        assert cat.cartridge("B00001")["location"] == "onsite"
    # the vault confirms A00001; putting B00001 straight into the same vault is refused too
    assert cli(site, "rotation", "receive", "A00001", capsys=capsys)[0] == 0
    code, _, err = cli(site, "cartridge", "move", "B00001", "transit-to:north", capsys=capsys)
    assert code == 75 and "never stored in one place" in err
    # a batch is all or nothing: one refused cartridge ships none
    with site.catalog() as cat, pytest.raises(Exception) as err_info:
        rotation_job.ship(site.settings, cat, ["B00001"], to="north")
    assert getattr(err_info.value, "exit_code", None) == 75


def test_a_cartridge_recorded_offsite_is_never_appended_to(site: Site) -> None:
    verify_both(site)
    eject_all(site)
    with site.catalog() as cat:
        rotation_job.ship(site.settings, cat, ["A00001"])
        # tapearc will not load it while it is recorded offsite ...
        with pytest.raises(PolicyRefused, match="rotation receive A00001"):
            load_cartridge(site.settings, cat, "A00001", "da")
        # ... but someone puts it back in the drive by hand, without receiving it
        from tapearc.jobs.media import open_drive

        driver = open_drive(site.settings, "da")
        driver.load("A00001")
        driver.close()
        used = cat.cartridge("A00001")["bytes_used"]
    generate_studies(site.pacs / "more", 1, instances_per_study=1, pixel_bytes=3_000, seed=9)
    report = run_nightly(site.settings)
    assert report.exit_code == 75
    assert any("recorded at transit-to:north" in n for n in report.needs), report.needs
    with site.catalog() as cat:
        assert cat.cartridge("A00001")["bytes_used"] == used
        result = write_pool(site.settings, cat, "A")
        assert result.exit_code == 75 and result.archives == 0


def test_recall_from_the_vaults_asks_for_a_cartridge_back(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    verify_both(site)
    eject_all(site)
    with site.catalog() as cat:
        rotation_job.ship(site.settings, cat, ["A00001", "B00001"])
        rotation_job.receive(site.settings, cat, ["A00001", "B00001"])
        uid = cat.query("SELECT study_uid FROM studies LIMIT 1")[0]["study_uid"]
        [res] = recall(site.settings, cat, [uid], tmp_path / "out", identities=[site.identity])
        assert res.needs and not res.verified
        assert "A00001 in vault north" in res.needs and "B00001 in vault south" in res.needs
        assert "bring-back of A00001 requested" in res.needs
        recall(site.settings, cat, [uid], tmp_path / "out", identities=[site.identity])
        assert len(cat.query("SELECT * FROM bring_back WHERE state = 'open'")) == 1
    code, out, _ = cli(site, "rotation", "plan", "--json", capsys=capsys)
    assert [i["barcode"] for i in json.loads(out)["bring_back"]] == ["A00001"]
    code, out, _ = cli(site, "rotation", "ship", capsys=capsys)  # today's plan
    assert code == 0 and "A00001: vault:north -> transit-back:north" in out
    # B00001 cannot come back while A00001 is away: its studies would have no offsite copy
    code, _, err = cli(site, "cartridge", "move", "B00001", "transit-back:south", capsys=capsys)
    assert code == 75 and "no copy left offsite" in err
    clock.advance(timedelta(days=1))
    assert cli(site, "rotation", "receive", "A00001", capsys=capsys)[0] == 0
    with site.catalog() as cat:
        assert cat.query("SELECT state FROM bring_back")[0]["state"] == "done"
        load_cartridge(site.settings, cat, "A00001", "da")
        [res] = recall(site.settings, cat, [uid], tmp_path / "out", identities=[site.identity])
        assert res.verified
        # the recall's copy still counts: it is in the site's custody and goes back
        assert rotation_job.current_exposure(cat, rotation_job.load_policy(site.settings)) \
            .studies == 0


def test_plan_manifest_and_status_carry_no_patient_data(
    site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    set_clock(9, 9)  # A00001 and B00001 have held unshipped data since day 1, 02:00
    manifest = tmp_path / "manifest.html"
    code, out, _ = cli(site, "rotation", "plan", "--manifest", str(manifest), capsys=capsys)
    assert code == 0 and "A00001" in out and "not verified" in out
    code, out, _ = cli(site, "rotation", "plan", "--json", capsys=capsys)
    doc = json.loads(out)
    assert {i["barcode"] for i in doc["ship"]} == {"A00001", "B00001"}
    assert all(i["overdue"] and i["blocked"] for i in doc["ship"])
    assert doc["exposure"]["studies"] == 2 and doc["exposure"]["days"] == pytest.approx(8 + 7 / 24, abs=0.01)
    assert doc["exposure"]["over"] is False
    code, out, _ = cli(site, "status", "--json", capsys=capsys)
    status = json.loads(out)
    assert status["pending"] == {"studies": 0, "instances": 0, "bytes": 0}
    assert status["last_nightly"]["result"] == "ok"
    assert status["cartridges"] == {"A": {"onsite": 1}, "B": {"onsite": 1}}
    assert {d["drive"]: d["loaded"] for d in status["drives"]} == {"da": "A00001",
                                                                   "db": "B00001"}
    assert any("OVERDUE ship A00001" in t for t in status["today"])
    code, human, _ = cli(site, "status", capsys=capsys)
    assert code == 0 and "exposure: 8.3 days" in human and "OVERDUE" in human
    with site.catalog() as cat:
        phi = [v for r in cat.query("SELECT patient_id, patient_name, accession FROM studies")
               for v in r.values() if v]
    assert phi
    for text in (manifest.read_text(), out, human):
        assert not [v for v in phi if str(v) in text], "patient data in rotation output"


def test_nightly_warns_past_the_exposure_limit(site: Site) -> None:
    set_clock(12, 2)  # nothing shipped for 11 days; the limit is 10
    report = run_nightly(site.settings)
    assert report.exit_code == 75
    [warning] = report.needs
    assert warning.startswith("rotation: exposure 11.0 days is over the limit of 10")


def test_lost_cartridge_copies_stop_counting(site: Site,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    eject_all(site)
    code, _, _ = cli(site, "cartridge", "move", "a00001", "lost", "--reason", "dropped",
                       capsys=capsys)
    assert code == 0
    with site.catalog() as cat:
        assert cat.cartridge("A00001")["state"] == "lost"
        assert len(cat.pending_instances("A")) == 4  # they are written again
    move, state = audit_rows(site)[-2:]
    assert (move["action"], state["action"]) == ("cartridge.move", "cartridge.state")
    assert json.loads(str(state["detail"])) == {"from": "appendable", "to": "lost",
                                                "reason": "dropped"}
    assert state["actor"] == move["actor"]
    code, _, err = cli(site, "cartridge", "move", "B00001", "destroyed", capsys=capsys)
    assert code == 75 and "retire it first" in err
    code, _, err = cli(site, "cartridge", "move", "B00001", "the-moon", capsys=capsys)
    assert code == 2 and "not a location" in err
    # a retired cartridge that goes missing is recorded lost where it was; retired is final
    assert cli(site, "cartridge", "retire", "B00001", capsys=capsys)[0] == 0
    assert cli(site, "cartridge", "move", "B00001", "lost", capsys=capsys)[0] == 0
    with site.catalog() as cat:
        cart = cat.cartridge("B00001")
        assert (cart["state"], cart["location"]) == ("retired", "lost")


def test_bad_rotation_config_is_exit_78(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    text = site.config.read_text().replace("max_onsite_days = 7", "max_onsite_days = \"7\"")
    site.config.write_text(text)
    code, _, err = cli(site, "rotation", "plan", capsys=capsys)
    assert code == 78 and "rotation.max_onsite_days" in err


def test_audit_chain_verifies_and_any_edited_row_is_caught(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    verify_both(site)
    eject_all(site)
    with site.catalog() as cat:
        rotation_job.ship(site.settings, cat, ["A00001", "B00001"])
        rotation_job.receive(site.settings, cat, ["A00001", "B00001"])
    assert check_catalog(site.settings)["ok"]
    assert cli(site, "catalog", "check", capsys=capsys)[0] == 0
    path = site.settings.catalog_path
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DROP TRIGGER audit_no_update")  # what someone with the file could do
    rows = conn.execute("SELECT id, detail, actor, at FROM audit ORDER BY id").fetchall()
    assert len(rows) > 10
    for row_id, detail, who, at in rows:
        for column, value in (("detail", detail.replace("transit", "tr4nsit") + " "),
                              ("actor", who + "x"), ("at", at.replace("2026", "2025"))):
            conn.execute(f"UPDATE audit SET {column} = ? WHERE id = ?", (value, row_id))
            result = check_catalog(site.settings)
            assert not result["ok"] and f"audit log row {row_id}" in result["problems"][0]
            conn.execute(f"UPDATE audit SET {column} = ? WHERE id = ?",
                         ({"detail": detail, "actor": who, "at": at}[column], row_id))
    # every row is back as it was; what remains is the dropped protection, which is reported
    assert check_catalog(site.settings)["problems"] == [
        "the audit log's protection audit_no_update was removed"]
    # a row removed from the middle (in a copy) breaks the chain at the next one
    copy = path.with_name("copy.sqlite")
    conn.execute("VACUUM INTO ?", (str(copy),))
    other = sqlite3.connect(copy, isolation_level=None)
    other.execute("DROP TRIGGER audit_no_delete")
    other.execute("DELETE FROM audit WHERE id = ?", (rows[len(rows) // 2][0],))
    other.close()
    with open_catalog(copy) as damaged:
        assert damaged.verify_audit() == (len(rows) // 2 + 1, rows[len(rows) // 2 + 1][0])
    # one edit, through the command: exit 65
    conn.execute("UPDATE audit SET detail = replace(detail, 'north', 'south') "
                 "WHERE action = 'cartridge.move' AND subject = 'A00001'")
    conn.close()
    code, out, _ = cli(site, "catalog", "check", capsys=capsys)
    assert code == 65 and "hash chain broken" in out


def test_an_older_catalog_gains_the_bring_back_table(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    _v1(conn)
    conn.close()
    with open_catalog(path) as cat:
        assert cat.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert cat.query("SELECT * FROM bring_back") == []


def test_a_bring_back_that_would_leave_no_offsite_copy_waits(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    verify_both(site)
    eject_all(site)
    with site.catalog() as cat:
        rotation_job.ship(site.settings, cat, ["A00001"])
        rotation_job.receive(site.settings, cat, ["A00001"])
        assert cat.request_bring_back("A00001", "recall")
        assert not cat.request_bring_back("A00001", "recall")  # asked once
    code, out, _ = cli(site, "rotation", "plan", "--json", capsys=capsys)
    [item] = json.loads(out)["bring_back"]
    assert item["barcode"] == "A00001" and "no copy left offsite" in item["blocked"]
    assert any("bring-back of A00001 waits" in t for t in json.loads(out)["todo"])
    code, out, _ = cli(site, "rotation", "ship", capsys=capsys)
    assert code == 0 and "nothing to ship today" in out
    with site.catalog() as cat:
        assert cat.cartridge("A00001")["location"] == "vault:north"
    # once B00001 is in its vault, A00001 may come back
    assert cli(site, "rotation", "ship", "B00001", capsys=capsys)[0] == 0
    code, out, _ = cli(site, "rotation", "ship", capsys=capsys)
    assert code == 0 and "A00001: vault:north -> transit-back:north" in out
