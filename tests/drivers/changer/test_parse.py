"""parse_mtx_status on real libraries' output (tests/fixtures/mtx/, sources in each header)."""

from __future__ import annotations

import pytest

from tapearc.drivers.changer import Location, parse_mtx_status
from tapearc.errors import FormatError
from tests.drivers.changer.recorded import fixture_text


def test_hera_library_two_drives_mail_slot_and_cleaning_cartridge() -> None:
    inv = parse_mtx_status(fixture_text("mtx", "hera-lto9-2drives-24slots-ie.txt"))
    assert inv.device == "/dev/sg25"
    assert [(d.index, d.full, d.barcode, d.source_slot) for d in inv.drives] == [
        (0, True, "042142L9", 8),
        (1, True, "HER002L9", 8),
    ]
    assert len(inv.slots) == 24
    assert [s.number for s in inv.import_export_slots] == [24]
    assert inv.import_export_slots[0].barcode == "HER003L9"
    assert len(inv.storage_slots) == 23
    assert inv.cleaning_cartridges == ("CLN003L1",)
    assert inv.slot(12).cleaning and not inv.slot(11).cleaning
    assert inv.empty_slots == (8,)
    assert inv.slot(8).barcode is None and not inv.slot(8).full
    assert inv.find("HER002L9") == Location("drive", 1)
    assert inv.find("her013l9") == Location("slot", 23)
    assert inv.find("HER003L9") == Location("slot", 24, import_export=True)
    assert inv.find("HER999L9") is None
    assert len(inv.barcodes) == 25  # 2 in drives + 23 full elements (slot 8 empty)


def test_tandberg_padded_tags_and_request_sense_noise() -> None:
    inv = parse_mtx_status(fixture_text("mtx", "tandberg-storageloader-1drive-7slots.txt"))
    assert inv.device == "/dev/sg5"
    assert inv.drives[0].full is False and inv.drives[0].barcode is None
    # the library pads every tag with 24 spaces; barcodes must come out clean
    assert [s.barcode for s in inv.slots] == [
        "000711L4", "A00008L5", "A00034L5", "A00014L5", "A00036L5", "A00025L5", "000218L5",
    ]
    assert inv.import_export_slots == ()
    assert inv.empty_slots == ()
    assert inv.cleaning_cartridges == ()


def test_ibm_output_truncated_by_its_source_is_refused() -> None:
    # header: 1840 slots, 255 I/E; the document stops at element 48 -> a partial inventory
    # must not be trusted (a present cartridge would look absent)
    text = fixture_text("mtx", "ibm-ts4500-truncated.txt")
    with pytest.raises(FormatError, match=r"incomplete.*1840 slots"):
        parse_mtx_status(text)


def test_ibm_blank_tags_on_empty_slots_read_as_no_barcode() -> None:
    # Same recording with the header's counts made to match what the document kept (3 drives,
    # 48 slots, 0 I/E): checks the "Empty:VolumeTag=<36 spaces>" format, not the counts.
    text = fixture_text("mtx", "ibm-ts4500-truncated.txt").replace(
        "1840 Slots ( 255 Import/Export )", "48 Slots ( 0 Import/Export )"
    )
    inv = parse_mtx_status(text)
    assert [d.full for d in inv.drives] == [False, False, False]
    assert inv.slot(3).full is False and inv.slot(3).barcode is None
    assert inv.slot(6).barcode == "IBM015LA"
    assert len(inv.empty_slots) == 48 - 5


@pytest.mark.parametrize(
    "text",
    [
        "",
        "mtx: Request Sense: Sense Key=Not Ready\n",
        "Product Type: Medium Changer\nVendor ID: 'IBM     '\n",  # inquiry, not status
    ],
)
def test_no_header_is_a_format_error(text: str) -> None:
    with pytest.raises(FormatError, match="no 'Storage Changer' header"):
        parse_mtx_status(text)


def test_missing_drive_line_is_a_format_error() -> None:
    text = fixture_text("mtx", "hera-lto9-2drives-24slots-ie.txt")
    cut = "\n".join(ln for ln in text.splitlines() if not ln.startswith("Data Transfer Element 1"))
    with pytest.raises(FormatError, match="2 drives"):
        parse_mtx_status(cut)


def test_unknown_source_alternate_tag_and_no_barcode_reader() -> None:
    # Formats printed by mtx.c Status() that no public recording shows (notes/recorded/mtx.md,
    # "Not found"): built from the printf formats in mtx 1.3.12's source.
    text = (
        "  Storage Changer /dev/sg3:2 Drives, 3 Slots ( 1 Import/Export )\n"
        "Data Transfer Element 0:Full (Unknown Storage Element Loaded):VolumeTag = ABC001L8"
        ":AlternateVolumeTag = XYZ\n"
        "Data Transfer Element 1:Full (Storage Element 2 Loaded)\n"
        "      Storage Element 1:Full :VolumeTag=ABC002L8:AlternateVolumeTag=QQQ\n"
        "      Storage Element 2:Empty\n"
        "      Storage Element 3 IMPORT/EXPORT:Empty\n"
    )
    inv = parse_mtx_status(text)
    assert inv.drives[0].barcode == "ABC001L8" and inv.drives[0].source_slot is None
    assert inv.drives[1].full and inv.drives[1].barcode is None and inv.drives[1].source_slot == 2
    assert inv.slot(1).barcode == "ABC002L8"
    assert inv.import_export_slots[0].full is False
    assert inv.to_json()["drives"] == [
        {"index": 0, "barcode": "ABC001L8", "source_slot": None},
        {"index": 1, "barcode": None, "source_slot": 2},
    ]


def test_inquiry_of_a_changer_and_of_a_drive(monkeypatch: pytest.MonkeyPatch) -> None:
    from tapearc.drivers.changer import Changer, parse_mtx_inquiry
    from tapearc.errors import DeviceUnavailable
    from tests.drivers.changer.recorded import FAKES, fixture_path

    ibm = parse_mtx_inquiry(fixture_text("mtx", "inquiry-ibm-03584L32.txt"))
    assert (ibm.product_type, ibm.vendor, ibm.product, ibm.revision) == (
        "Medium Changer", "IBM", "03584L32", "2C02"
    )
    assert ibm.is_changer
    monkeypatch.setenv("FAKE_MTX_OUTPUT", str(fixture_path("mtx", "inquiry-ibm-03584L32.txt")))
    assert Changer("/dev/sg1", mtx=str(FAKES / "changer" / "mtx")).inquiry() == ibm
    drive = parse_mtx_inquiry(fixture_text("mtx", "tandberg-drive-inquiry.txt"))
    assert not drive.is_changer and drive.product == "Ultrium 5-SCSI"
    with pytest.raises(FormatError):
        parse_mtx_inquiry("")
    monkeypatch.setenv("FAKE_MTX_OUTPUT", str(fixture_path("mtx", "tandberg-drive-inquiry.txt")))
    with pytest.raises(DeviceUnavailable, match=r"is a Tape Drive .*not a medium changer"):
        Changer("/dev/sg4", mtx=str(FAKES / "changer" / "mtx")).inquiry()
