"""Classification of udev devices into tape, optical and changer drives (pure functions)."""

from __future__ import annotations

from tapearc.drivers.discovery import DeviceRecord, classify, classify_all
from tests.drivers.discovery.records import UMOCKDEV, parse_umockdev


def records() -> list[DeviceRecord]:
    return parse_umockdev(UMOCKDEV.read_text())


def test_bd_writer_with_appendable_bd_r_and_an_lto_drive() -> None:
    tape, optical = classify_all(records())
    assert (tape.kind, tape.node) == ("tape", "/dev/nst0")  # st0 is the same drive: listed once
    assert tape.by_id == "/dev/tape/by-id/scsi-35000e11167c1a001-nst"
    assert (tape.vendor, tape.model, tape.serial, tape.revision) == (
        "IBM", "ULT3580-HH8", "35000e11167c1a001", "Q3F1")
    assert optical.kind == "optical" and optical.node == "/dev/sr0"
    assert optical.by_id == "/dev/disk/by-id/ata-HL-DT-ST_BD-RE_BH16NS40_K9OG1234567"
    assert (optical.vendor, optical.model, optical.revision) == ("HL-DT-ST", "BD-RE BH16NS40", "1.05")
    assert optical.media == "BD-R" and optical.media_state == "appendable"
    assert optical.sessions == 2 and optical.volume_label == "TAPEARC_0001"
    assert optical.writes == ["CD-R", "CD-RW", "DVD-R", "DVD+R", "DVD+R DL", "BD-R", "BD-RE"]


# The cases below are constructed from cdrom_id's property names (systemd src/udev/cdrom_id),
# not recorded: a DVD writer with a blank DVD+R, an empty drive, and a closed CD-R.

def optical(props: dict[str, str], node: str = "/dev/sr1") -> DeviceRecord:
    base = {"SUBSYSTEM": "block", "DEVTYPE": "disk", "ID_CDROM": "1", "ID_CDROM_CD_R": "1",
            "ID_CDROM_DVD_PLUS_R": "1", "ID_MODEL": "TSSTcorp_CDDVDW_SE-S084F",
            "ID_VENDOR": "TSSTcorp"}
    return DeviceRecord("block", node.rsplit("/", 1)[-1], node, {**base, **props})


def test_blank_dvd_plus_r() -> None:
    found = classify(optical({"ID_CDROM_MEDIA": "1", "ID_CDROM_MEDIA_DVD_PLUS_R": "1",
                              "ID_CDROM_MEDIA_STATE": "blank"}))
    assert found is not None
    assert (found.media, found.media_state, found.sessions) == ("DVD+R", "blank", None)
    assert found.model == "CDDVDW SE-S084F"  # ID_MODEL's repeated vendor dropped
    assert found.writes == ["CD-R", "DVD+R"]


def test_empty_drive_reports_no_media() -> None:
    found = classify(optical({"ID_CDROM_MEDIA_STATE": "blank"}))  # stale state without media
    assert found is not None and found.media is None and found.media_state is None


def test_closed_cd_r() -> None:
    found = classify(optical({"ID_CDROM_MEDIA": "1", "ID_CDROM_MEDIA_CD_R": "1",
                              "ID_CDROM_MEDIA_STATE": "complete",
                              "ID_CDROM_MEDIA_SESSION_COUNT": "3"}))
    assert found is not None and (found.media, found.media_state, found.sessions) == ("CD-R", "complete", 3)


def test_other_devices_are_not_drives() -> None:
    disk = DeviceRecord("block", "sda", "/dev/sda", {"SUBSYSTEM": "block", "DEVTYPE": "disk"})
    nodeless = DeviceRecord("scsi_tape", "nst1", None, {"SUBSYSTEM": "scsi_tape"})
    mode_node = DeviceRecord("scsi_tape", "nst0a", "/dev/nst0a", {"SUBSYSTEM": "scsi_tape"})
    sg_disk = DeviceRecord("scsi_generic", "sg0", "/dev/sg0", {}, {"type": "0"})
    assert [classify(r) for r in (disk, nodeless, mode_node, sg_disk)] == [None] * 4


def test_changer_is_found_by_scsi_type_8() -> None:
    # lsscsi shape from notes/recorded/lsscsi-udev.md §3 (IBM 3573-TL on sg5); properties constructed
    rec = DeviceRecord("scsi_generic", "sg5", "/dev/sg5",
                       {"DEVLINKS": "/dev/tape/by-id/scsi-3500110a00123abcd-changer"},
                       {"type": "8", "vendor": "IBM     ", "model": "3573-TL         ", "rev": "F.11"})
    found = classify(rec)
    assert found is not None and found.kind == "changer"
    assert (found.vendor, found.model, found.by_id) == (
        "IBM", "3573-TL", "/dev/tape/by-id/scsi-3500110a00123abcd-changer")
