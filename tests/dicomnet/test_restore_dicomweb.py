"""Restore, migrate and pull over DICOMweb, against Orthanc's DICOMweb plugin over HTTPS with a
test CA (in a network namespace): STOW-RS confirmed by QIDO-RS, kill and resume, refused
credentials and certificates, pacing, and a nightly fed by QIDO-RS and WADO-RS."""

from __future__ import annotations

import json
import time
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from tapearc.catalog.journal import Journal
from tapearc.dicomnet.dicomweb import WebPeer
from tapearc.errors import EXIT_FAILED, EXIT_OK
from tapearc.jobs.delivery import SendOptions, run_restore, studies_in_folder
from tapearc.jobs.nightly import run_nightly
from tapearc.support.limits import Limits, RateSetting, parse_window
from tests.dicomnet.orthanc import PASSWORD, USER, Orthanc
from tests.jobs.site import PASSPHRASE, Site, make_site
from tests.support import run_cli
from tests.synth import generate_studies


def _secret(path: Path, text: str) -> Path:
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Site:
    s = make_site(tmp_path / "site", max_archive="200 KiB")
    monkeypatch.setenv("TAPEARC_CONFIG", str(s.config))
    monkeypatch.setenv("TAPEARC_PASSPHRASE", PASSPHRASE)
    s.label("A00001", "A")
    s.label("B00001", "B")
    return s


def test_restore_20_studies_by_stow_confirmed_by_qido(
        site: Site, web_orthanc: Orthanc, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    studies = generate_studies(site.pacs, 20, instances_per_study=3, pixel_bytes=20_000)
    assert run_nightly(site.settings).exit_code == 0
    secret = _secret(tmp_path / "pacs.auth", f"{USER}:{PASSWORD}")
    code, out, err = run_cli(["restore", "--all", "--to-pacs", web_orthanc.dicomweb_url,
                              "--auth", "basic", "--auth-file", str(secret),
                              "--tls-ca", str(web_orthanc.ca), "--rate", "c2", "--json"], capsys)
    assert code == EXIT_OK, err
    doc = json.loads(out)
    assert doc["counts"]["confirmed"] == 20 and doc["instances_sent"] == 60
    assert doc["peer"] == web_orthanc.dicomweb_url
    for s in studies:
        assert web_orthanc.study_instance_count(s.study_uid) == 3
    assert web_orthanc.statistics()["CountInstances"] == 60
    # the secret is in no output and nowhere in the catalog (journal, audit)
    assert PASSWORD not in out + err
    for f in site.root.glob("catalog.sqlite*"):
        assert PASSWORD.encode() not in f.read_bytes()


_CHILD = """
import sys
from pathlib import Path
from tapearc.catalog import open_catalog
from tapearc.catalog.journal import Journal
from tapearc.dicomnet.dicomweb import load_credentials, parse_web_peer
from tapearc.dicomnet.peer import TlsOptions
from tapearc.jobs.delivery import SendOptions, run_restore, studies_in_folder
from tapearc.support.limits import Limits, RateSetting
folder, dbpath, url, ca, job = sys.argv[1:6]
peer = parse_web_peer(url, tls=TlsOptions(ca_file=Path(ca)),
                      credentials=load_credentials("basic", env="PACS_AUTH"))
src = studies_in_folder(Path(folder))
run_restore(src.refs, src.fetch, peer, Journal.open(open_catalog(Path(dbpath)), int(job)),
            SendOptions(limits=Limits(default=RateSetting(instances_per_s=25))),
            instances=src.instances)
"""


def _states(journal: Journal) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in journal.items().values():
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    return counts


def test_killed_stow_restore_resumes_without_resending(
        synth_studies: Path, web_orthanc: Orthanc, web_peer: WebPeer, db: Any,
        tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    src = studies_in_folder(synth_studies)
    refs = src.refs
    total = sum(r.expected_instances for r in refs)
    journal = Journal.create(db, kind="restore", peer=str(web_peer))
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(synth_studies), str(tmp_path / "catalog.db"),
         web_orthanc.dicomweb_url, str(web_orthanc.ca), str(journal.job_id)],
        env={**os.environ, "PACS_AUTH": f"{USER}:{PASSWORD}"})
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and child.poll() is None:
            if _states(journal).get("confirmed", 0) >= len(refs) // 2:
                break
            time.sleep(0.05)
        assert child.poll() is None, "the restore finished before it could be killed"
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait()
    confirmed_before = {u for u, r in journal.items().items() if r["state"] == "confirmed"}
    assert len(refs) // 2 <= len(confirmed_before) < len(refs)
    on_pacs_before = web_orthanc.statistics()["CountInstances"]
    assert on_pacs_before < total

    report = run_restore(refs, src.fetch, web_peer, Journal.open(db, journal.job_id))
    assert report.complete, report.to_dict()
    assert report.skipped_confirmed == len(confirmed_before)
    # nothing sent twice: the resumed run asked QIDO-RS and sent only what the PACS lacked
    assert report.instances_sent == total - on_pacs_before
    assert web_orthanc.statistics()["CountInstances"] == total
    assert _states(journal) == {"confirmed": len(refs)}


def test_stow_is_paced_by_the_window_in_force(
        synth_studies: Path, web_orthanc: Orthanc, web_peer: WebPeer, db: Any) -> None:
    src = studies_in_folder(synth_studies)
    refs = src.refs[:8]
    total = sum(r.expected_instances for r in refs)
    # a window that covers the whole day (it wraps midnight) overrides the unlimited default
    limits = Limits(default=RateSetting(), windows=(parse_window("00:00-00:00=15/s,c2"),))
    journal = Journal.create(db, kind="restore", peer=str(web_peer))
    t0 = time.monotonic()
    report = run_restore(refs, src.fetch, web_peer, journal, SendOptions(limits=limits),
                         instances=src.instances)
    elapsed = time.monotonic() - t0
    assert report.complete, report.to_dict()
    # 15 instances/s with 0.25 s of credit: the sending alone takes this long at least
    assert elapsed >= (total - 15 * 0.25 - 1) / 15, (total, elapsed)


def test_wrong_token_exits_1_naming_the_status(
        site: Site, web_orthanc: Orthanc, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    generate_studies(site.pacs, 2, instances_per_study=2, pixel_bytes=4000)
    assert run_nightly(site.settings).exit_code == 0
    monkeypatch.setenv("PACS_TOKEN", "wrong-token-value")
    # --debug: every log line and the traceback are printed, and still carry no secret
    code, out, err = run_cli(["--debug", "restore", "--all", "--to-pacs",
                              web_orthanc.dicomweb_url,
                              "--auth", "bearer", "--auth-env", "PACS_TOKEN",
                              "--tls-ca", str(web_orthanc.ca)], capsys)
    assert code == EXIT_FAILED, (out, err)
    assert "HTTP 401 Unauthorized" in err and "environment variable PACS_TOKEN" in err
    assert "Traceback" in err and "wrong-token-value" not in out + err
    assert web_orthanc.statistics()["CountInstances"] == 0


def test_untrusted_certificate_is_refused(
        site: Site, web_orthanc: Orthanc, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    generate_studies(site.pacs, 1, instances_per_study=2, pixel_bytes=4000)
    assert run_nightly(site.settings).exit_code == 0
    secret = _secret(tmp_path / "pacs.auth", f"{USER}:{PASSWORD}")
    # the system's trust store only: the test CA is not in it
    code, out, err = run_cli(["restore", "--all", "--to-pacs", web_orthanc.dicomweb_url,
                              "--auth", "basic", "--auth-file", str(secret)], capsys)
    assert code == EXIT_FAILED, (out, err)
    assert "refused the certificate" in err and "certificate verify failed" in err
    assert web_orthanc.statistics()["CountInstances"] == 0


def test_pull_by_qido_and_wado_feeds_the_nightly(
        web_orthanc: Orthanc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from tapearc.dicomnet.stow import StowSender

    secret = _secret(tmp_path / "pacs.auth", f"{USER}:{PASSWORD}")
    other_day = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday",
                 "sunday")[(date.today().weekday() + 3) % 7]
    site = make_site(tmp_path / "site", extra=f"""
[pacs]
address = "{web_orthanc.dicomweb_url}/"
tls_ca = "{web_orthanc.ca}"
auth = "basic"
auth_file = "{secret}"
staging = "staging"
[reconcile]
full_weekday = "{other_day}"
""")
    monkeypatch.setenv("TAPEARC_CONFIG", str(site.config))
    monkeypatch.setenv("TAPEARC_PASSPHRASE", PASSPHRASE)
    site.label("A00001", "A")
    site.label("B00001", "B")
    # the cloud PACS holds studies this site never had on disk
    cloud = generate_studies(tmp_path / "cloud", 3, instances_per_study=3, pixel_bytes=2048,
                             seed=31, study_dates=["20240105", "", "20231130"])
    with StowSender(site.settings.pacs.peer()) as sender:  # type: ignore[union-attr]
        assert len(sender.send([f for s in cloud for f in s.files]).stored) == 9
    code, out, err = run_cli(["nightly", "--json"], capsys)
    assert code == EXIT_OK, (out, err)
    doc = json.loads(out)
    assert doc["reconcile"]["pulled"] == 9
    assert doc["pacs_not_archived"] == {"A": 0, "B": 0}
    assert doc["ingested"] >= 9
    # a second reconcile, over QIDO-RS only: nothing is missing any more
    code, out, err = run_cli(["reconcile", "--full", "--json"], capsys)
    assert code == EXIT_OK, (out, err)
    rec = json.loads(out)
    assert rec["pools"] == {"A": {"not_archived": 0, "gone_from_pacs": 0},
                            "B": {"not_archived": 0, "gone_from_pacs": 0}}
    assert rec["pacs"]["studies"] == 3 and rec["pacs"]["instances"] == 9
    assert PASSWORD not in out + err


def test_stow_bytes_are_paced_on_the_wire(
        synth_studies: Path, web_orthanc: Orthanc, web_peer: WebPeer) -> None:
    from tapearc.dicomnet.stow import StowSender

    files = sorted(synth_studies.rglob("*.dcm"))
    total = sum(f.stat().st_size for f in files)
    rate = 0.4  # MB/s: the whole set takes a few seconds
    limits = Limits(default=RateSetting(mb_per_s=rate, concurrency=2))
    t0 = time.monotonic()
    with StowSender(web_peer, limits=limits) as sender:
        result = sender.send(files)
    elapsed = time.monotonic() - t0
    assert len(result.stored) == len(files)
    expected = total / (rate * 1e6)
    # charged before each piece leaves (0.1 s of credit): never faster than the limit
    assert expected - 0.2 <= elapsed <= expected * 1.5 + 1, (expected, elapsed)
