"""A night with a library, at the changer level: load by barcode, write both pools, unload.

Stateful fake mtx (the robot) + two vtape drives whose cartridges are files named by barcode
(the media) + a fake sg_logs replaying TapeAlert pages. No operator step anywhere. The catalog
side (suspect cartridge, studies pending, summary line) is the nightly job's and is tested there;
here the decisions it records are checked.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tapearc.drivers.base import ArchivePosition, Driver, Label
from tapearc.drivers.changer import Changer, loaded
from tapearc.drivers.tapealert import classify, read_tapealert, respond
from tests.drivers.changer.library import library_vtape
from tests.drivers.changer.recorded import FAKES, fixture_path

BLOCK = 64 * 1024
POOL_DRIVE = {"A": 0, "B": 1}


def make_drive(tmp_path: Path, name: str, library: Path | None = None, index: int = 0) -> Driver:
    return library_vtape(tmp_path, name, BLOCK, library, index)


def label_for(barcode: str, pool: str) -> Label:
    return Label(barcode, pool, "site1", "LTO-9", BLOCK, "2026-11-27T00:00:00Z")


@pytest.fixture
def night(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    # Cartridges: labelled beforehand (cartridge label), then put into the library.
    setup = make_drive(tmp_path, "setup")
    for barcode, pool in [("PA0001L9", "A"), ("PA0002L9", "A"), ("PB0001L9", "B")]:
        setup.load(barcode)
        setup.write_label(label_for(barcode, pool))
        setup.eject()
    state = tmp_path / "library.json"
    mtx_log = tmp_path / "mtx.log"
    # Drive 0 still holds PA0002L9 from an earlier run; the night needs PA0001L9 and PB0001L9.
    state.write_text(json.dumps({
        "drives": [{"barcode": "PA0002L9", "source": 1}, {"barcode": None, "source": None}],
        "slots": [{"barcode": None, "ie": False}, {"barcode": "PB0001L9", "ie": False},
                  {"barcode": "CLN001L1", "ie": False}, {"barcode": "PA0001L9", "ie": False},
                  {"barcode": None, "ie": False}, {"barcode": None, "ie": True}],
        "offline_required": True,   # the robot refuses to pull a tape the drive has not ejected
    }))
    monkeypatch.setenv("FAKE_MTX_STATE", str(state))
    monkeypatch.setenv("FAKE_MTX_LOG", str(mtx_log))
    drives = [make_drive(tmp_path, "drive0", state, 0), make_drive(tmp_path, "drive1", state, 1)]
    drives[0].load("PA0002L9")  # what the drive holds, as the earlier run left it
    # How the jobs build the changer: a drive is ejected through its driver before the robot
    # takes a cartridge out of it.
    changer = Changer(
        "/dev/sg7",
        mtx=str(FAKES / "changer" / "mtx-stateful"),
        prepare_unload=lambda index: drives[index].eject(),
        clean_wait=5,
        poll_interval=0.01,
    )
    return {"tmp": tmp_path, "state": state, "log": mtx_log, "drives": drives, "changer": changer}


def write_archive(driver: Driver, expected: Label, payload: bytes) -> ArchivePosition:
    sink = driver.append_archive(expected, None)
    for i in range(0, len(payload), BLOCK):
        sink.write_block(payload[i : i + BLOCK])
    return sink.commit(b"index:" + expected.barcode.encode())


def test_nightly_with_library_loads_by_barcode_writes_both_pools_and_unloads(
    night: dict[str, Any],
) -> None:
    changer: Changer = night["changer"]
    drives: list[Driver] = night["drives"]
    plan = {"A": "PA0001L9", "B": "PB0001L9"}  # what the catalog says is appendable per pool
    written: dict[str, ArchivePosition] = {}
    for pool, barcode in plan.items():
        index = POOL_DRIVE[pool]
        driver = drives[index]
        with loaded(changer, barcode, index, driver):
            label = driver.read_label()
            assert label is not None and label.barcode == barcode and label.pool == pool
            written[pool] = write_archive(driver, label, bytes([ord(pool)]) * (3 * BLOCK + 10))

    doc = json.loads(night["state"].read_text())
    assert [d["barcode"] for d in doc["drives"]] == [None, None]  # both drives empty
    slots = {s["barcode"]: n for n, s in enumerate(doc["slots"], 1) if s["barcode"]}
    assert slots == {"PA0002L9": 1, "PB0001L9": 2, "CLN001L1": 3, "PA0001L9": 4}
    moves = [ln for ln in night["log"].read_text().splitlines() if not ln.endswith("status")]
    assert moves == [
        "mtx -f /dev/sg7 unload 1 0",  # the leftover PA0002L9 back to its slot, after eject
        "mtx -f /dev/sg7 load 4 0",  # PA0001L9 for pool A
        "mtx -f /dev/sg7 unload 4 0",
        "mtx -f /dev/sg7 load 2 1",  # PB0001L9 for pool B
        "mtx -f /dev/sg7 unload 2 1",
    ]
    # The data is on the right cartridges: read them back without the library or the catalog.
    reader = make_drive(night["tmp"], "reader")
    for pool, barcode in plan.items():
        reader.load(barcode)
        assert reader.list_archives() == [written[pool]]
        assert reader.read_index(written[pool]) == b"index:" + barcode.encode()
        first = next(iter(reader.read_blocks(written[pool], 0, 1)))
        assert first == bytes([ord(pool)]) * BLOCK
        reader.eject()
    reader.load("PA0002L9")
    assert reader.list_archives() == []  # the leftover cartridge was not written
    reader.eject()


def test_media_error_during_the_write_makes_the_cartridge_suspect(
    night: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """TapeAlert read before and after the session; 'Media' after the write -> suspect."""
    changer: Changer = night["changer"]
    drive = night["drives"][0]
    sg_logs = str(FAKES / "sg_logs" / "sg_logs")
    monkeypatch.setenv(
        "FAKE_SG_LOGS_OUTPUT", str(fixture_path("sg_logs", "ibm-ult3580-tda-clear.txt"))
    )
    with loaded(changer, "PA0001L9", 0, drive):
        before = classify(read_tapealert("/dev/sg3", sg_logs=sg_logs))
        label = drive.read_label()
        assert label is not None
        write_archive(drive, label, b"x" * BLOCK)
        monkeypatch.setenv("FAKE_SG_LOGS_OUTPUT", str(fixture_path("sg_logs", "generated-media.txt")))
        after = classify(read_tapealert("/dev/sg3", sg_logs=sg_logs))
        response = respond(after, drive="drive0", barcode=label.barcode, changer=changer)
    assert not before.any
    assert after.media_suspect and after.stop_appending and not after.drive_failed
    assert response.cleaned_with is None
    assert "drive0: TapeAlert 4 Media (C): the cartridge is damaged: its studies will be copied " \
        "to another cartridge; retire it" in response.summary
    assert "retire cartridge PA0001L9 once its studies are copied" in response.needs


def test_cleaning_requested_after_a_session_uses_the_library_cleaner(
    night: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    changer: Changer = night["changer"]
    drive = night["drives"][0]
    monkeypatch.setenv(
        "FAKE_SG_LOGS_OUTPUT", str(fixture_path("sg_logs", "generated-cleaning-required.txt"))
    )
    with loaded(changer, "PA0001L9", 0, drive):
        flags = read_tapealert("/dev/sg3", sg_logs=str(FAKES / "sg_logs" / "sg_logs"))
    response = respond(classify(flags), drive="drive0", barcode="PA0001L9", changer=changer,
                       drive_index=0)
    assert response.cleaned_with == "CLN001L1"
    assert "drive drive0 cleaned with CLN001L1" in response.summary
    assert response.needs == []
    doc = json.loads(night["state"].read_text())
    assert doc["drives"][0]["barcode"] is None and doc["slots"][2]["barcode"] == "CLN001L1"
