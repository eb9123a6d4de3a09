"""Changer against the real mtx (error paths), a replaying fake mtx and a stateful fake library."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tapearc.drivers.changer import Changer, ensure_loaded, loaded
from tapearc.errors import (
    EXIT_TEMPFAIL,
    EXIT_UNAVAILABLE,
    DeviceError,
    DeviceUnavailable,
    NoMedium,
    OperatorActionNeeded,
    ToolMissing,
    WrongMedium,
)
from tests.drivers.changer.library import FakeLibrary
from tests.drivers.changer.recorded import FAKES, fixture_path
from tests.support import need_tool

REPLAY_MTX = str(FAKES / "changer" / "mtx")


# --- real mtx: what can run here without a library -------------------------------------------


def test_real_mtx_missing_device_is_unavailable(tmp_path: Path) -> None:
    need_tool("mtx")
    changer = Changer(str(tmp_path / "no-such-sg"))
    with pytest.raises(DeviceUnavailable, match="cannot open the library changer") as exc:
        changer.inventory()
    assert exc.value.exit_code == EXIT_UNAVAILABLE
    assert "lsscsi -g" in str(exc.value)


def test_real_mtx_on_a_non_sg_device_is_unavailable() -> None:
    need_tool("mtx")
    with pytest.raises(DeviceUnavailable, match="not an sg device"):
        Changer("/dev/null").inventory()


def test_missing_mtx_program_names_the_package() -> None:
    with pytest.raises(ToolMissing, match="mtx-nonexistent") as exc:
        Changer("/dev/sg9", mtx="mtx-nonexistent").inventory()
    assert exc.value.exit_code == EXIT_UNAVAILABLE


# --- replaying fake: recorded outputs and exit codes -----------------------------------------


def test_inventory_runs_mtx_status_on_the_device(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    log = tmp_path / "argv.log"
    monkeypatch.setenv("FAKE_MTX_OUTPUT", str(fixture_path("mtx", "hera-lto9-2drives-24slots-ie.txt")))
    monkeypatch.setenv("FAKE_MTX_LOG", str(log))
    inv = Changer("/dev/sg25", mtx=REPLAY_MTX).inventory()
    assert log.read_text() == "mtx -f /dev/sg25 status\n"
    assert inv.cleaning_cartridges == ("CLN003L1",)


def test_recorded_move_failure_is_a_device_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FAKE_MTX_STDERR", str(fixture_path("mtx", "mhvtl-move-failed.txt")))
    monkeypatch.setenv("FAKE_MTX_RC", "1")
    with pytest.raises(DeviceError, match=r"failed to move.*MOVE MEDIUM from Element Address 1001"):
        Changer("/dev/sg9", mtx=REPLAY_MTX).transfer(2, 3)


def test_truncated_status_is_not_trusted(monkeypatch: pytest.MonkeyPatch) -> None:
    from tapearc.errors import FormatError

    monkeypatch.setenv("FAKE_MTX_OUTPUT", str(fixture_path("mtx", "ibm-ts4500-truncated.txt")))
    with pytest.raises(FormatError):
        ensure_loaded(Changer("/dev/sg1", mtx=REPLAY_MTX), "IBM006LA", 0)


def test_replayed_library_loads_from_the_right_slot(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The Tandberg recording: drive 0 empty, A00036L5 in slot 5.
    log = tmp_path / "argv.log"
    monkeypatch.setenv(
        "FAKE_MTX_OUTPUT", str(fixture_path("mtx", "tandberg-storageloader-1drive-7slots.txt"))
    )
    monkeypatch.setenv("FAKE_MTX_LOG", str(log))
    Changer("/dev/sg5", mtx=REPLAY_MTX).load("A00036L5", 0)
    assert log.read_text().splitlines() == ["mtx -f /dev/sg5 status", "mtx -f /dev/sg5 load 5 0"]


# --- stateful fake library -------------------------------------------------------------------


@pytest.fixture
def library(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeLibrary:
    return FakeLibrary(
        tmp_path,
        monkeypatch,
        drives=2,
        slots=["PA0001L9", "PB0001L9", None, "PA0002L9", "CLN001L1", None],
        ie=1,
    )


def test_load_by_barcode_and_already_loaded_is_a_no_op(library: FakeLibrary) -> None:
    ensure_loaded(library.changer, "PB0001L9", 1)
    assert library.in_drive(1) == "PB0001L9"
    assert library.moves() == ["mtx -f /dev/sg7 load 2 1"]
    ensure_loaded(library.changer, "PB0001L9", 1)
    assert library.moves() == ["mtx -f /dev/sg7 load 2 1"]  # nothing moved


def test_load_unloads_the_previous_cartridge_to_its_slot_first(library: FakeLibrary) -> None:
    ensure_loaded(library.changer, "PA0001L9", 0)
    ensure_loaded(library.changer, "PA0002L9", 0)
    assert library.in_drive(0) == "PA0002L9"
    assert library.slot_of("PA0001L9") == 1
    assert library.moves()[-2:] == ["mtx -f /dev/sg7 unload 1 0", "mtx -f /dev/sg7 load 4 0"]


def test_cartridge_in_the_other_drive_is_moved(library: FakeLibrary) -> None:
    ensure_loaded(library.changer, "PA0001L9", 1)
    ensure_loaded(library.changer, "PA0001L9", 0)
    assert library.in_drive(0) == "PA0001L9" and library.in_drive(1) is None


def test_absent_barcode_asks_the_operator(library: FakeLibrary) -> None:
    with pytest.raises(NoMedium, match="PA0099L9 is not in the library /dev/sg7") as exc:
        ensure_loaded(library.changer, "PA0099L9", 0)
    assert exc.value.exit_code == EXIT_TEMPFAIL
    assert library.moves() == []


def test_cleaning_cartridge_is_not_loaded_as_data(library: FakeLibrary) -> None:
    with pytest.raises(WrongMedium, match="cleaning cartridge"):
        ensure_loaded(library.changer, "CLN001L1", 0)
    assert library.moves() == []


def test_no_such_drive(library: FakeLibrary) -> None:
    with pytest.raises(DeviceUnavailable, match="has no drive 5"):
        ensure_loaded(library.changer, "PA0001L9", 5)


def test_stale_source_slot_goes_to_first_empty_slot(library: FakeLibrary) -> None:
    # HERA quirk: a drive reports a source slot that is now full.
    ensure_loaded(library.changer, "PA0001L9", 0)
    library.edit(lambda d: d["slots"][0].update(barcode="XX0001L9"))  # someone filled slot 1
    assert library.changer.unload(0) == 3
    assert library.slot_of("PA0001L9") == 3


def test_cartridge_loaded_from_mail_slot_stays_in_the_library(library: FakeLibrary) -> None:
    library.edit(lambda d: d["slots"][6].update(barcode="PB0002L9"))  # operator inserted it
    ensure_loaded(library.changer, "PB0002L9", 0)
    slot = library.changer.unload(0)
    assert slot == 3 and library.slot_of("PB0002L9") == 3


def test_unload_with_no_empty_slot(library: FakeLibrary) -> None:
    ensure_loaded(library.changer, "PA0001L9", 0)

    def fill(doc: dict[str, Any]) -> None:
        for n, s in enumerate(doc["slots"][:6]):
            s["barcode"] = s["barcode"] or f"FILL{n:02d}L9"

    library.edit(fill)
    with pytest.raises(OperatorActionNeeded, match="no empty slot"):
        library.changer.unload(0)


def test_unload_of_an_empty_drive_does_nothing(library: FakeLibrary) -> None:
    assert library.changer.unload(1) == 0
    assert library.moves() == []


def test_move_to_export_from_drive_and_full_mail_slot(library: FakeLibrary) -> None:
    ensure_loaded(library.changer, "PA0001L9", 0)
    assert library.changer.move_to_export("PA0001L9") == 7
    assert library.slot_of("PA0001L9") == 7 and library.in_drive(0) is None
    assert library.changer.move_to_export("PA0001L9") == 7  # already there
    with pytest.raises(OperatorActionNeeded, match="no free import/export slot"):
        library.changer.move_to_export("PB0001L9")
    with pytest.raises(NoMedium):
        library.changer.move_to_export("ZZ0001L9")


def test_library_without_mail_slot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lib = FakeLibrary(tmp_path, monkeypatch, drives=1, slots=["AA0001L9"])
    with pytest.raises(OperatorActionNeeded, match=r"has no import/export slot.*slot 1"):
        lib.changer.move_to_export("AA0001L9")


def test_import_all_moves_mail_slot_cartridges_into_empty_slots(library: FakeLibrary) -> None:
    library.edit(lambda d: d["slots"][6].update(barcode="PB0003L9"))
    assert library.changer.import_all() == [("PB0003L9", 3)]
    assert library.slot_of("PB0003L9") == 3


def test_inventory_changed_under_us(library: FakeLibrary) -> None:
    with pytest.raises(OperatorActionNeeded, match=r"inventory changed.*1002 is Empty"):
        library.changer.transfer(3, 7)  # slot 3 is empty


def test_offline_required_calls_prepare_unload_first(library: FakeLibrary) -> None:
    library.edit(lambda d: d.update(offline_required=True))
    ensure_loaded(library.changer, "PA0001L9", 0)
    with pytest.raises(OperatorActionNeeded, match="drive still holds the cartridge"):
        library.changer.unload(0)
    ejected: list[int] = []

    def eject(index: int) -> None:  # what the tape driver's eject (mt offline) does
        ejected.append(index)
        library.edit(lambda d: d["drives"][index].update(offline=True))

    library.changer.prepare_unload = eject
    ensure_loaded(library.changer, "PA0002L9", 0)  # must unload PA0001L9 first
    assert ejected == [0]
    assert library.in_drive(0) == "PA0002L9" and library.slot_of("PA0001L9") == 1


def test_clean_loads_cleaner_waits_and_puts_both_back(library: FakeLibrary) -> None:
    library.edit(lambda d: d.update(cleaning_polls=2))
    ensure_loaded(library.changer, "PA0001L9", 0)
    assert library.changer.clean(0) == "CLN001L1"
    assert library.slot_of("CLN001L1") == 5
    assert library.slot_of("PA0001L9") == 1
    assert library.in_drive(0) is None
    assert library.sleeps == [1.0, 1.0]  # two refused unloads while the drive was cleaning


def test_clean_that_never_finishes(library: FakeLibrary) -> None:
    library.edit(lambda d: d.update(cleaning_polls=1000))
    library.changer.clean_wait = 0
    with pytest.raises(DeviceError, match="did not finish cleaning with CLN001L1"):
        library.changer.clean(1)


def test_clean_without_cleaning_cartridge(library: FakeLibrary) -> None:
    with pytest.raises(OperatorActionNeeded, match="no usable cleaning cartridge"):
        library.changer.clean(0, exclude=("CLN001L1",))


def test_loaded_context_unloads_after_success_and_failure(library: FakeLibrary) -> None:
    with loaded(library.changer, "PB0001L9", 1):
        assert library.in_drive(1) == "PB0001L9"
    assert library.in_drive(1) is None and library.slot_of("PB0001L9") == 2
    with pytest.raises(RuntimeError), loaded(library.changer, "PB0001L9", 1):
        raise RuntimeError("write failed")
    assert library.in_drive(1) is None and library.slot_of("PB0001L9") == 2
