"""The recall desk with a tape library (fake mtx keeping a real inventory): what the robot can
reach is NEARLINE and a retrieve has it loaded; a cartridge taken out of the library is OFFLINE
and a retrieve of it waits as a request for the shelf."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread

from tapearc.jobs.cartridge import eject_drive
from tapearc.jobs.nightly import run_nightly
from tests.dicomnet.desk import CLIENT_AET, desk_for, find_answers, named_studies
from tests.jobs.test_library_nightly import library_site
from tests.support import need_tool


def _take_everything_out(inventory: dict[str, Any]) -> None:
    for element in inventory["drives"] + inventory["slots"]:
        element["barcode"] = None


def test_the_robot_loads_what_a_retrieve_needs(
    netns: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    need_tool("findscu", "movescu")
    site, lib = library_site(tmp_path, monkeypatch, ["A00001", "B00001", None])
    studies = named_studies(site, 2)
    assert run_nightly(site.settings).exit_code == 0
    assert lib.in_drive(0) is None and lib.in_drive(1) is None  # back in their slots
    desk = desk_for(site, studies).start()
    try:
        found = find_answers(desk.dcmtk("findscu", "-S", "-k", "QueryRetrieveLevel=STUDY",
                                        "-k", "PatientName=*", "-k", "InstanceAvailability"))
        assert {a["InstanceAvailability"] for a in found} == {"NEARLINE"}
        moved = tmp_path / "moved"
        moved.mkdir()
        desk.dcmtk("movescu", "-S", "-aem", CLIENT_AET, "+P", str(desk.client_port), "-od",
                   str(moved), "-k", "QueryRetrieveLevel=STUDY", "-k",
                   f"StudyInstanceUID={studies[0].study_uid}")
        assert {str(dcmread(p).SOPInstanceUID) for p in moved.iterdir()} == \
            {str(dcmread(p).SOPInstanceUID) for p in studies[0].files}
        assert "A00001" in (lib.in_drive(0), lib.in_drive(1))
        # both cartridges go to the mail slot and out of the library: OFFLINE, on the shelf
        lib.edit(_take_everything_out)
        for drive in ("da", "db"):
            eject_drive(site.settings, drive)
        desk.restart()
        found = find_answers(desk.dcmtk("findscu", "-S", "-k", "QueryRetrieveLevel=STUDY",
                                        "-k", "PatientName=*", "-k", "InstanceAvailability"))
        assert {a["InstanceAvailability"] for a in found} == {"OFFLINE"}
        out = desk.dcmtk("movescu", "-d", "-S", "-aem", CLIENT_AET, "+P", str(desk.client_port),
                         "-od", str(moved), "-k", "QueryRetrieveLevel=STUDY", "-k",
                         f"StudyInstanceUID={studies[1].study_uid}", check=False)
        assert "(shelf); request 1 queued" in out.stdout + out.stderr
    finally:
        desk.close()
    with site.catalog() as cat:
        [req] = cat.recall_requests()
        assert req["study_uid"] == studies[1].study_uid
        assert cat.open_bring_backs() == []  # it is in the building: nothing to bring back
