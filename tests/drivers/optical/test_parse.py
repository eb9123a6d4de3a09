"""Parsing what xorriso, cdrskin and wodim print (recorded and captured outputs), and mapping
their problem lines to tapearc's errors whatever the exit code says."""

from __future__ import annotations

from pathlib import Path

import pytest

from tapearc.drivers.optical import (
    PROFILES,
    Extent,
    MediaInfo,
    check_run,
    media_profile,
    parse_lba_report,
    parse_toc,
    problems,
)
from tapearc.errors import (
    EXIT_CONFIG,
    EXIT_TEMPFAIL,
    EXIT_UNAVAILABLE,
    ConfigError,
    DeviceUnavailable,
    MediumFull,
    ToolFailed,
)
from tapearc.support.process import Completed

FIXTURES = Path(__file__).parents[2] / "fixtures" / "xorriso"


def fixture(name: str) -> str:
    """A fixture's text without its ``# source:`` line."""
    lines = (FIXTURES / name).read_text().splitlines(keepends=True)
    assert lines[0].startswith("# source:")
    return "".join(lines[1:])


def done(stderr: str, rc: int, program: str = "/usr/bin/xorriso") -> Completed:
    return Completed((program, "-dev", "stdio:/x"), rc, "", stderr)


def test_toc_of_a_real_dvd_plus_r_with_five_sessions() -> None:
    info = parse_toc(fixture("dvdplusr-5sessions.stdout.txt"))
    assert info.present and info.media == "DVD+R"
    assert info.state == "appendable"
    assert (info.readable_blocks, info.writable_blocks) == (367920, 1925136)
    assert info.sessions == 5
    assert info.nwa == 369968  # "369968s. " with the trailing dot as recorded
    assert info.volume_id is None  # "Other session" lines: not ISO 9660


def test_toc_of_two_iso_sessions_with_media_space_and_file_extents() -> None:
    text = fixture("stdio-2sessions.stdout.txt")
    info = parse_toc(text)
    assert info.state == "appendable" and info.sessions == 2
    assert info.nwa == 160 and info.space_blocks == 40544728
    assert info.volume_id == "TAPEARC_X1"
    files = parse_lba_report(text)
    assert files == {
        "/000001.data": [Extent(89, 49, 100000)],
        "/000001.index": [Extent(138, 1, 4)],
        "/label.json": [Extent(61, 1, 12)],
    }


def test_a_file_of_random_bytes_is_a_closed_disc_with_no_space() -> None:
    info = parse_toc(fixture("stdio-foreign-closed.stdout.txt"))
    assert info.state == "complete" and info.space_blocks == 0


def test_multi_extent_files_keep_their_extent_order() -> None:
    text = ("File data lba:  1 ,     3000 ,     10 ,    20480 , '/000002.data'\n"
            "File data lba:  0 ,      100 , 2097151 , 4294965248 , '/000002.data'\n")
    assert parse_lba_report(text)["/000002.data"] == [Extent(100, 2097151, 4294965248),
                                                      Extent(3000, 10, 20480)]


def test_a_tolerated_sorry_still_reads_the_toc_it_got() -> None:
    text = fixture("dvdplusr-no-toc.txt")
    assert problems(text) == [("SORRY", "Cannot obtain Table Of Content")]
    check_run(done(text, 32), "toc", tolerate_sorry=True)  # a query may go on
    with pytest.raises(ToolFailed):
        check_run(done(text, 32), "burn")
    assert parse_toc(text).state == "appendable"


@pytest.mark.parametrize(("name", "rc", "error", "code"), [
    ("native-overflow.stderr.txt", 5, MediumFull, EXIT_TEMPFAIL),
    ("xorrecord-overflow.stderr.txt", 5, MediumFull, EXIT_TEMPFAIL),
    ("no-drive.stderr.txt", 5, DeviceUnavailable, EXIT_UNAVAILABLE),
    ("wodim-no-driver.stderr.txt", 255, DeviceUnavailable, EXIT_UNAVAILABLE),
    # cdrskin ignores what it does not know and may exit 0: the FATAL line decides
    ("cdrskin-problems.stderr.txt", 0, MediumFull, EXIT_TEMPFAIL),
])
def test_problem_lines_decide_not_the_exit_code(name: str, rc: int, error: type[Exception],
                                                code: int) -> None:
    stderr = fixture(name)
    with pytest.raises(error) as err:
        check_run(done(stderr, rc, "/usr/bin/" + name.split("-")[0]), "burning")
    assert getattr(err.value, "exit_code", None) == code
    assert "burning" in str(err.value)


def test_unknown_failure_is_a_tool_failure_naming_the_line() -> None:
    with pytest.raises(ToolFailed, match="Not a known command"):
        check_run(done("xorriso : FAILURE : Not a known command:  '-iso_level'\n", 5), "burning")
    with pytest.raises(ToolFailed, match="exit 5"):
        check_run(done("", 5), "burning")  # a bare non-zero exit still fails
    check_run(done("xorriso : NOTE : Re-assessing -outdev 'stdio:/x'\n", 0), "burning")


def test_media_profiles_and_aliases() -> None:
    assert media_profile("bd-r 25") is PROFILES["BD-R"]
    assert media_profile("BD-R 128").nominal_bytes == 128_001_769_472
    assert media_profile("BD-R").nominal_bytes == 25_025_314_816
    assert media_profile("dvd 4.7").name == "DVD+R"
    assert media_profile("CD 700").worm and not media_profile("BD-RE").worm
    with pytest.raises(ConfigError) as err:
        media_profile("LaserDisc")
    assert err.value.exit_code == EXIT_CONFIG


def test_no_disc_is_not_present() -> None:
    assert not parse_toc("Media current: is not present\n").present
    assert MediaInfo().present


def test_a_sorry_with_exit_0_is_not_a_failure() -> None:
    # cdrskin 1.5.4 as nobody, burning the first session of a blank stdio: disc (captured here)
    line = "cdrskin: SORRY : Read start address 0s larger than number of readable blocks 0\n"
    check_run(done(line, 0, "/usr/bin/cdrskin"), "burning")
    with pytest.raises(ToolFailed):
        check_run(done(line, 12, "/usr/bin/cdrskin"), "burning")
