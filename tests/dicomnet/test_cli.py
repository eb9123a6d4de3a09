"""``tapearc pull`` and ``tapearc receive`` as a user runs them, against Orthanc and storescu."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tapearc.support.process import run_tool
from tests.cli.test_cli_contract import run
from tests.dicomnet.orthanc import PACS_AET, Orthanc, free_port
from tests.jobs.site import Site, make_site
from tests.support import need_tool
from tests.synth import generate_studies


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Site:
    """A site with no [pacs] table: the PACS and staging come from the command line."""
    s = make_site(tmp_path / "site")
    monkeypatch.setenv("TAPEARC_CONFIG", str(s.config))
    return s


def test_pull_cli_fetches_what_the_catalog_lacks(orthanc: Orthanc, site: Site, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    studies = generate_studies(tmp_path / "src", 2, instances_per_study=2, pixel_bytes=1024)
    for s in studies:
        for f in s.files:
            orthanc.upload(f)
    staging = tmp_path / "staging"
    peer = f"{PACS_AET}@127.0.0.1:{orthanc.dicom_port}"
    code, out, err = run(["pull", "--from", peer, "--staging", str(staging), "--json"], capsys)
    assert code == 0, err
    doc = json.loads(out)
    assert doc["result"] == "done" and doc["instances"] == 4 and doc["to_fetch"] == 4
    # once ingested, the catalog has a source for each: nothing more to fetch
    assert run(["ingest", str(staging)], capsys)[0] == 0
    code, out, err = run(["pull", "--from", peer, "--staging", str(staging), "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["to_fetch"] == 0 and json.loads(out)["instances"] == 0


def test_pull_cli_bad_input(site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["pull", "--from", "nonsense", "--staging", str(tmp_path)], capsys)
    assert code == 2 and "AET@HOST:PORT" in err
    code, _, err = run(["pull", "--from", "P@h:104"], capsys)
    assert code == 2 and "--staging" in err  # no [pacs] staging in the config either
    code, _, err = run(["pull", "--from", "P@h:104", "--since", "2024-13",
                        "--staging", str(tmp_path)], capsys)
    assert code == 2 and "--since" in err
    code, _, err = run(["pull", "--staging", str(tmp_path)], capsys)
    assert code == 2 and "[pacs]" in err


def test_pull_cli_pacs_down_exits_69(netns: None, site: Site, tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "tapearc", "pull", "--from", f"X@127.0.0.1:{free_port()}",
         "--staging", str(tmp_path / "st")],
        capture_output=True, text=True, timeout=60,
    )
    assert res.returncode == 69, res.stderr
    assert res.stderr.startswith("error: ") and "Traceback" not in res.stderr


def test_receive_cli_refuses_to_start_without_an_allow_list(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "tapearc", "receive", "--port", str(free_port()),
         "--staging", str(tmp_path / "st")], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("error: a receiver accepts nothing without an allow-list")


def test_receive_cli_until_sigterm(netns: None, tmp_path: Path) -> None:
    need_tool("storescu")
    from pydicom.data import get_testdata_file

    port = free_port()
    staging = tmp_path / "staging"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tapearc", "receive", "--aet", "ARCHIVE", "--port", str(port),
         "--bind", "127.0.0.1", "--allow", "MOD@127.0.0.1", "--staging", str(staging)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stderr is not None
        assert "receiving as ARCHIVE" in proc.stderr.readline()
        ct = str(get_testdata_file("CT_small.dcm", download=False))
        run_tool(["storescu", "-aet", "MOD", "-aec", "ARCHIVE", "127.0.0.1", str(port), ct],
                 timeout=30, env={"TCP_NODELAY": "1"})
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert "receive: 1 instances" in out
    assert len(list(staging.glob("*/*.dcm"))) == 1


def test_receive_takes_its_settings_from_the_receiver_table(netns: None, tmp_path: Path) -> None:
    need_tool("storescu")
    from pydicom.data import get_testdata_file

    port = free_port()
    config = tmp_path / "tapearc.toml"
    config.write_text(f"""
[site]
name = "rx"
[receiver]
staging = "incoming"
aet = "ARCHIVE"
port = {port}
allow = ["MOD@127.0.0.1"]
""")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tapearc", "--config", str(config), "receive"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert proc.stderr is not None
        assert f"receiving as ARCHIVE on 127.0.0.1:{port}" in proc.stderr.readline()
        ct = str(get_testdata_file("CT_small.dcm", download=False))
        refused = run_tool(["storescu", "-aet", "OTHER", "-aec", "ARCHIVE", "127.0.0.1",
                            str(port), ct], timeout=30, check=False)
        assert refused.returncode != 0
        run_tool(["storescu", "-aet", "MOD", "-aec", "ARCHIVE", "127.0.0.1", str(port), ct],
                 timeout=30, env={"TCP_NODELAY": "1"})
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "receive: 1 instances" in out
    assert len(list((tmp_path / "incoming").glob("*/*.dcm"))) == 1
