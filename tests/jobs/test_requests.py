"""Recall requests without the network: listed by cartridge with where it is, in status's
"today", run when the cartridge is back (by ``requests run`` and by the nightly), announced
through the hook; and ``find`` by name and birth date with each copy's place."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from tapearc.config import load_settings
from tapearc.jobs import rotation as rotation_job
from tapearc.jobs.cartridge import eject_drive, load_cartridge
from tapearc.jobs.nightly import run_nightly
from tapearc.jobs.requests import queue_request, run_requests
from tests.dicomnet.desk import named_studies
from tests.jobs.site import PASSPHRASE, Site, make_site
from tests.support import run_cli
from tests.synth import SynthStudy

HOOK = """#!/bin/sh
env | grep ^TAPEARC_REQUEST_ | sort > "{out}.$TAPEARC_REQUEST_ID"
exit {code}
"""


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Site, list[SynthStudy]]:
    """Two studies on A00001/B00001, both cartridges in their vaults, a workstation peer with
    no port (nothing can be sent to it: its requests end ``ready``), and a hook."""
    s = make_site(tmp_path / "site")
    s.label("A00001", "A")
    s.label("B00001", "B")
    studies = named_studies(s, 2)
    assert run_nightly(s.settings).exit_code == 0
    hook = tmp_path / "hook.sh"
    hook.write_text(HOOK.format(out=tmp_path / "hook", code=0))
    hook.chmod(hook.stat().st_mode | stat.S_IXUSR)
    with s.config.open("a") as fh:
        fh.write(f'\n[serve]\nhook = ["{hook}"]\n[serve.peers.ws]\naet = "WS"\n'
                 'address = "127.0.0.1"\n')
    s.settings = load_settings(s.config)
    eject_drive(s.settings, "da")
    eject_drive(s.settings, "db")
    with s.catalog() as cat:
        rotation_job.ship(s.settings, cat, ["A00001", "B00001"])
        rotation_job.receive(s.settings, cat, ["A00001", "B00001"])
    monkeypatch.setenv("TAPEARC_CONFIG", str(s.config))
    monkeypatch.setenv("TAPEARC_PASSPHRASE", PASSPHRASE)
    return s, studies


def _queue(s: Site, study: SynthStudy) -> int:
    with s.catalog() as cat:
        return queue_request(cat, caller="WS", address="127.0.0.1", destination="WS",
                             study_uid=study.study_uid, sop_uids=None, cartridges=["A00001"])


def test_requests_are_listed_by_cartridge_and_in_status_today(
    site: tuple[Site, list[SynthStudy]], capsys: pytest.CaptureFixture[str]
) -> None:
    s, studies = site
    first, second = _queue(s, studies[0]), _queue(s, studies[1])
    assert _queue(s, studies[0]) == first  # asked again: the same request
    code, out, _ = run_cli(["requests", "--json"], capsys)
    assert code == 0
    doc = json.loads(out)
    assert doc["cartridges"] == [{"barcode": "A00001", "pool": "A", "location": "vault:north",
                                  "place": "vault north", "reachable": False,
                                  "requests": [first, second]}]
    assert [(r["caller"], r["destination"], r["state"]) for r in doc["requests"]] == \
        [("WS", "WS", "waiting")] * 2
    code, out, _ = run_cli(["status", "--json"], capsys)
    assert "fetch A00001 (vault north) for 2 recall requests" in json.loads(out)["today"]
    with s.catalog() as cat:
        assert [b["barcode"] for b in cat.open_bring_backs()] == ["A00001"]
    code, out, _ = run_cli(["requests"], capsys)
    assert code == 0 and "vault north" in out and "WS" in out


def test_run_waits_for_the_cartridge_then_finishes_and_calls_the_hook(
    site: tuple[Site, list[SynthStudy]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s, studies = site
    rid = _queue(s, studies[0])
    code, out, _ = run_cli(["requests", "run"], capsys)
    assert code == 0 and "1 waiting" in out  # still in the vault
    assert not list(tmp_path.glob("hook.[0-9]*"))
    with s.catalog() as cat:
        rotation_job.ship(s.settings, cat)  # the plan brings A00001 back
        rotation_job.receive(s.settings, cat, ["A00001"])
        load_cartridge(s.settings, cat, "A00001", "da")
    code, out, _ = run_cli(["status", "--json"], capsys)
    assert "1 recall request can be sent from A00001 (drive da): tapearc requests run" in \
        json.loads(out)["today"]
    with s.catalog() as cat:
        report = run_requests(s.settings, cat, identities=[s.identity])
        assert report.ready == [rid] and report.hook_errors == []
        assert cat.recall_request(rid)["state"] == "ready"  # type: ignore[index]
    env = dict(line.split("=", 1) for line in
               (tmp_path / f"hook.{rid}").read_text().splitlines())
    assert env["TAPEARC_REQUEST_STATE"] == "ready"
    assert env["TAPEARC_REQUEST_STUDY"] == studies[0].study_uid
    assert env["TAPEARC_REQUEST_CARTRIDGES"] == "A00001"
    assert "no port" in env["TAPEARC_REQUEST_NOTE"]
    with s.catalog() as cat:
        actions = [r["action"] for r in cat.query("SELECT action FROM audit WHERE action"
                                                  " LIKE 'request.%' ORDER BY id")]
    assert actions == ["request.queued", "request.ready"]


def test_the_nightly_runs_requests_and_a_failing_hook_only_warns(
    site: tuple[Site, list[SynthStudy]], tmp_path: Path
) -> None:
    s, studies = site
    (tmp_path / "hook.sh").write_text(HOOK.format(out=tmp_path / "hook", code=3))
    rid = _queue(s, studies[1])
    with s.catalog() as cat:
        rotation_job.ship(s.settings, cat)
        rotation_job.receive(s.settings, cat, ["A00001"])
        load_cartridge(s.settings, cat, "A00001", "da")
    report = run_nightly(s.settings)
    assert report.requests is not None and report.requests["ready"] == [rid]
    assert report.requests["hook_errors"] and "exit code 3" in report.requests["hook_errors"][0]
    with s.catalog() as cat:
        assert cat.recall_requests() == []


def test_find_by_name_and_birth_date_shows_availability_and_places(
    site: tuple[Site, list[SynthStudy]], capsys: pytest.CaptureFixture[str]
) -> None:
    _, studies = site
    code, out, _ = run_cli(["find", "--patient-name", "smithers*", "--json"], capsys)
    assert code == 0
    [study] = json.loads(out)["studies"]
    assert study["study_uid"] == studies[1].study_uid
    assert (study["patient_name"], study["birth_date"]) == ("Smithers^Anna", "19610202")
    assert study["copies"] == {"A": ["A00001"], "B": ["B00001"]}
    assert study["locations"] == {"A00001": "vault:north", "B00001": "vault:south"}
    assert study["places"] == {"A00001": "vault north", "B00001": "vault south"}
    assert study["availability"] == "OFFLINE"
    for field in ("accession", "study_date", "modalities", "instances", "bytes", "patient_id"):
        assert field in study
    code, out, _ = run_cli(["find", "--birth-date", "1950-01-01", "--json"], capsys)
    assert [st["study_uid"] for st in json.loads(out)["studies"]] == [studies[0].study_uid]
    code, out, _ = run_cli(["find", "--patient-name", "SMITH*"], capsys)
    assert code == 0 and "A00001 (vault north)" in out and "OFFLINE" in out
