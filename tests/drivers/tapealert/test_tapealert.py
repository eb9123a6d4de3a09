"""TapeAlert: parsing sg_logs pages (recorded and real-sg_logs-decoded), decisions, reading."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tapearc.drivers.tapealert import (
    FLAG_NAMES,
    SEVERITY,
    classify,
    describe,
    parse_sg_logs_tapealert,
    read_tapealert,
    respond,
)
from tapearc.errors import (
    EXIT_UNAVAILABLE,
    DeviceError,
    DeviceUnavailable,
    FormatError,
    ToolFailed,
)
from tests.drivers.changer.recorded import FAKES, fixture_path, fixture_text
from tests.drivers.tapealert.pages import tapealert_page
from tests.support import need_tool

FAKE_SG_LOGS = str(FAKES / "sg_logs" / "sg_logs")


def decode_with_real_sg_logs(tmp_path: Path, flags: set[int]) -> str:
    """The real sg_logs's text for a TapeAlert page with ``flags`` set."""
    need_tool("sg_logs")
    page = tmp_path / "page.bin"
    page.write_bytes(tapealert_page(flags))
    done = subprocess.run(
        ["sg_logs", f"--in={page}", "--raw", "--pdt=1"],
        capture_output=True, text=True, check=True, timeout=30,
    )
    return done.stdout


# --- parsing ---------------------------------------------------------------------------------


def test_recorded_ibm_page_with_banner_has_no_flags() -> None:
    text = fixture_text("sg_logs", "ibm-ult3580-tda-clear.txt")
    assert text.startswith("    IBM       ULT3580-TDA")
    assert parse_sg_logs_tapealert(text) == set()


def test_every_name_in_the_recording_is_known() -> None:
    # all 64 parameters of the recorded page map to a flag number: no name drift
    text = fixture_text("sg_logs", "ibm-ult3580-tda-clear.txt")
    names = [ln.rsplit(":", 1)[0].strip() for ln in text.splitlines()[2:] if ln.strip()]
    assert len(names) == 64
    assert names == [FLAG_NAMES[n] for n in range(1, 65)]


@pytest.mark.parametrize("flags", [{4}, {20}, {31}, {7, 21}, {1, 64}, set(range(1, 65))])
def test_real_sg_logs_decoding_of_set_flags(tmp_path: Path, flags: set[int]) -> None:
    assert parse_sg_logs_tapealert(decode_with_real_sg_logs(tmp_path, flags)) == flags


@pytest.mark.parametrize(
    ("name", "flags"),
    [
        ("generated-media.txt", {4}),
        ("generated-cleaning-required.txt", {20}),
        ("generated-hardware-b.txt", {31}),
        ("generated-media-life-and-cleaning.txt", {7, 21}),
    ],
)
def test_committed_generated_pages(name: str, flags: set[int]) -> None:
    assert parse_sg_logs_tapealert(fixture_text("sg_logs", name)) == flags


def test_page_followed_by_another_page_stops_at_its_end() -> None:
    text = fixture_text("sg_logs", "generated-media.txt") + (
        "Supported log pages  [0x0]:\n    0x00        Supported log pages [sp]: 1\n"
    )
    assert parse_sg_logs_tapealert(text) == {4}


@pytest.mark.parametrize(
    "text",
    [
        "",
        "    IBM       ULT3580-TDA       T3S0\n",
        "Supported log pages  [0x0]:\n    0x2e        Tape alert [ta]\n",
        "TapeAlert response page (ssc-3, adc-3) [0x12]\n  Flag01h: 1  02h: 0\n",
    ],
)
def test_not_a_tapealert_page(text: str) -> None:
    with pytest.raises(FormatError):
        parse_sg_logs_tapealert(text)


def test_page_title_without_known_flags_is_refused() -> None:
    with pytest.raises(FormatError, match="no known flags"):
        parse_sg_logs_tapealert("Tape alert page (ssc-3) [0x2e]\n  Bogus thing: 1\n")


# --- decisions -------------------------------------------------------------------------------


def test_no_flags_no_action() -> None:
    actions = classify(set())
    assert not actions.any and not actions.stop_appending and actions.messages == ()


def test_cleaning_requested_and_required() -> None:
    for flag in (20, 21):
        a = classify({flag})
        assert a.needs_cleaning and not a.media_suspect and not a.drive_failed


@pytest.mark.parametrize("flag", [4, 5, 6, 7, 13, 14, 15, 18, 52, 53, 54, 59])
def test_media_errors_make_the_cartridge_suspect(flag: int) -> None:
    a = classify({flag})
    assert a.media_suspect and a.stop_appending and not a.drive_failed and not a.needs_cleaning


def test_nearing_media_life_only_warns() -> None:
    a = classify({19})
    assert not a.media_suspect and not a.stop_appending
    assert a.messages == ("TapeAlert 19 Nearing media life (I): the cartridge is nearing the end "
                          "of its life: plan its replacement",)


@pytest.mark.parametrize("flag", [30, 31, 38, 39, 56, 57, 58])
def test_drive_hardware_errors_stop_the_drive(flag: int) -> None:
    a = classify({flag})
    assert a.drive_failed and not a.media_suspect


def test_write_protect_is_read_only_not_suspect() -> None:
    a = classify({9})
    assert a.media_read_only and a.stop_appending and not a.media_suspect


def test_expired_cleaning_media() -> None:
    assert classify({22}).cleaning_media_bad and classify({23}).cleaning_media_bad


def test_messages_name_flag_and_severity() -> None:
    a = classify({31, 4})
    assert a.messages[0].startswith("TapeAlert 4 Media (C): the cartridge is damaged")
    assert a.messages[1].startswith("TapeAlert 31 Hardware B (C): the drive has a hardware fault")
    assert describe(47) == "47 Reserved (2Fh) (I)"


def test_severity_table_matches_the_notes_for_the_quoted_flags() -> None:
    # notes/recorded/sg_logs-tapealert.md: 0x03 W, 0x04 C, 0x14 C, 0x15 W, 0x1f C
    assert [SEVERITY[f] for f in (3, 4, 20, 21, 31)] == ["W", "C", "C", "W", "C"]


def test_respond_without_library_tells_the_operator() -> None:
    r = respond(classify({4, 20}), drive="drive0", barcode="PA0001L9")
    assert r.cleaned_with is None
    assert "clean drive drive0 with a cleaning cartridge" in r.needs
    assert "retire cartridge PA0001L9 once its studies are copied" in r.needs
    assert any("PA0001L9 is suspect" in line for line in r.summary)


def test_respond_with_failed_drive_does_not_clean() -> None:
    r = respond(classify({20, 30}), drive="drive1", barcode=None)
    assert r.cleaned_with is None
    assert r.needs == [
        "drive drive1 reports a hardware fault and is out of use: power-cycle it; if the fault "
        "stays, call the supplier"
    ]


# --- reading through sg_logs -----------------------------------------------------------------


def test_read_through_fake_sg_logs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    log = tmp_path / "argv.log"
    monkeypatch.setenv("FAKE_SG_LOGS_OUTPUT", str(fixture_path("sg_logs", "generated-media.txt")))
    monkeypatch.setenv("FAKE_SG_LOGS_LOG", str(log))
    assert read_tapealert("/dev/sg4", sg_logs=FAKE_SG_LOGS) == {4}
    assert log.read_text() == "sg_logs -p 0x2e /dev/sg4\n"


def test_unit_attention_is_retried(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FAKE_SG_LOGS_OUTPUT", str(fixture_path("sg_logs", "generated-media.txt")))
    monkeypatch.setenv("FAKE_SG_LOGS_RC", "6")
    slept: list[float] = []
    with pytest.raises(ToolFailed, match="exit code 6"):
        read_tapealert("/dev/sg4", sg_logs=FAKE_SG_LOGS, retries=2, sleep=slept.append)
    assert slept == [2.0, 2.0]


def test_page_not_supported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_SG_LOGS_OUTPUT", str(fixture_path("sg_logs", "generated-media.txt")))
    monkeypatch.setenv("FAKE_SG_LOGS_RC", "5")
    with pytest.raises(DeviceError, match="does not support the TapeAlert page"):
        read_tapealert("/dev/sg4", sg_logs=FAKE_SG_LOGS)


def test_real_sg_logs_on_missing_device(tmp_path: Path) -> None:
    need_tool("sg_logs")
    with pytest.raises(DeviceUnavailable, match="No such file or directory") as exc:
        read_tapealert(str(tmp_path / "sg99"))
    assert exc.value.exit_code == EXIT_UNAVAILABLE


def test_real_sg_logs_on_a_non_scsi_device() -> None:
    need_tool("sg_logs")
    with pytest.raises(DeviceUnavailable, match="cannot read TapeAlert from /dev/null"):
        read_tapealert("/dev/null")
