"""An LTFS drive inside a library: the robot loads by barcode, LTFS mounts, and on the way out
the order is umount -> ltfs exits -> mt offline -> robot unload (fake mtx + fake LTFS tools)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tapearc.drivers.base import Label
from tapearc.drivers.changer import Changer, ensure_loaded, loaded
from tapearc.errors import IntegrityError
from tests.drivers.changer.recorded import FAKES
from tests.drivers.ltfs.fakeworld import FakeLtfsDrive


@pytest.fixture
def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Changer, FakeLtfsDrive, Path]:
    fake = FakeLtfsDrive(tmp_path)
    state = tmp_path / "library.json"
    state.write_text(json.dumps({
        "drives": [{"barcode": None, "source": None}],
        "slots": [{"barcode": "LT0001L9", "ie": False}, {"barcode": "LT0002L9", "ie": False},
                  {"barcode": None, "ie": False}],
        "offline_required": True,
    }))
    monkeypatch.setenv("FAKE_MTX_STATE", str(state))
    # one log for the robot and the drive, to see the order across both
    monkeypatch.setenv("FAKE_MTX_LOG", str(fake.drive_dir / "calls.log"))
    return Changer("/dev/sg9", mtx=str(FAKES / "changer" / "mtx-stateful")), fake, state


def library_ltfs(changer: Changer, fake: FakeLtfsDrive, state: Path):  # type: ignore[no-untyped-def]
    """An LtfsDriver whose cartridges come from the robot; its eject shows in the library."""

    def insert(barcode: str) -> None:
        ensure_loaded(changer, barcode, 0)
        fake.insert(changer.inventory().drive(0).barcode or "")  # what the robot put there

    driver = fake.driver(insert=insert)
    original_offline = driver._offline

    def offline() -> None:
        original_offline()
        doc = json.loads(state.read_text())
        doc["drives"][0]["offline"] = True  # the library now sees the drive unloaded
        state.write_text(json.dumps(doc))

    driver._offline = offline  # type: ignore[method-assign]
    changer.prepare_unload = lambda index: driver.eject()
    return driver


def test_library_ltfs_session_order(rig: tuple[Changer, FakeLtfsDrive, Path]) -> None:
    changer, fake, state = rig
    driver = library_ltfs(changer, fake, state)
    lab = Label("LT0002L9", "B", "north", "LTO-9", 4096, "2026-11-27T00:00:00Z")
    with loaded(changer, "LT0002L9", 0, driver):
        driver.write_label(lab)  # blank: formatted with mkltfs first
        sink = driver.append_archive(lab, None)
        sink.write_block(b"z" * 4096)
        sink.commit(b"ix")
    calls = [c for c in fake.calls() if not c.endswith(" status")]
    dev, mnt = fake.drive_dir, fake.mountpoint
    assert calls == [
        "mtx -f /dev/sg9 load 2 0",
        f"ltfs -o devname={dev} {mnt}",
        f"mkltfs -d {dev} -s LT0002 -n LT0002L9",
        f"ltfs -o devname={dev} {mnt}",
        f"umount {mnt}",
        f"mt -f {dev} offline",
        "mtx -f /dev/sg9 unload 2 0",
    ]
    doc = json.loads(state.read_text())
    assert doc["drives"][0]["barcode"] is None and doc["slots"][1]["barcode"] == "LT0002L9"
    assert not fake.index_lost("LT0002L9")
    # the archive is on the cartridge's volume
    assert sorted(p.name for p in fake.volume("LT0002L9").iterdir()) == [
        "000001.data", "000001.index", "label.json",
    ]


def test_lost_index_puts_the_cartridge_back_and_says_so(
    rig: tuple[Changer, FakeLtfsDrive, Path],
) -> None:
    changer, fake, state = rig
    (fake.media / "LT0001L9.formatted").touch()
    (fake.media / "LT0001L9.index-lost").touch()  # ejected too early by someone, earlier
    driver = library_ltfs(changer, fake, state)
    with pytest.raises(IntegrityError, match="LTFS11024E"), loaded(changer, "LT0001L9", 0, driver):
        pass
    doc = json.loads(state.read_text())
    assert doc["drives"][0]["barcode"] is None and doc["slots"][0]["barcode"] == "LT0001L9"
