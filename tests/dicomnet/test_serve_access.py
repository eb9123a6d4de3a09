"""Who may use the recall desk, and the record it keeps: configured peers only (AE title and
address), DICOM TLS, every query and retrieve audited in the catalog, no PHI in the log."""

from __future__ import annotations

import logging
import subprocess
import time
from pathlib import Path

import pytest
from pydicom import dcmread

from tapearc.config import load_settings
from tapearc.dicomnet.peer import TlsOptions
from tests.dicomnet.desk import CLIENT_AET, NAMES, Desk, find_answers, make_desk
from tests.dicomnet.tlsca import CertFiles, make_pki
from tests.support import need_tool


def _reconfigure(desk: Desk, old: str, new: str) -> None:
    desk.site.config.write_text(desk.site.config.read_text().replace(old, new))
    desk.site.settings = load_settings(desk.site.config)


def test_a_known_ae_calling_from_another_peers_address_is_refused(
    netns: None, tmp_path: Path
) -> None:
    need_tool("findscu", "movescu")
    # FINDSCU belongs at 127.0.0.2; 127.0.0.1 is another peer's address
    desk = make_desk(tmp_path / "site", n_studies=2,
                     extra='[serve.peers.other]\naet = "OTHER"\naddress = "127.0.0.1"\n')
    _reconfigure(desk, 'address = "127.0.0.1"\nport', 'address = "127.0.0.2"\nport')
    desk.start()
    try:
        out = desk.dcmtk("findscu", "-d", "-S", "-k", "QueryRetrieveLevel=STUDY", "-k",
                         "PatientName=*", "-k", "StudyInstanceUID", check=False)
        text = out.stdout + out.stderr
        assert not find_answers(out)
        assert "0xc001" in text and "may not call from this address" in text, text
        ok = desk.dcmtk("findscu", "-S", "-k", "QueryRetrieveLevel=STUDY", "-k",
                        "PatientName=*", "-k", "StudyInstanceUID", aet="OTHER")
        assert len(find_answers(ok)) == 2
        # a C-MOVE to a node that is not a peer with a port: 0xA801, nothing sent
        out = desk.dcmtk("movescu", "-d", "-S", "-aem", "ELSEWHERE", "-k",
                         "QueryRetrieveLevel=STUDY", "-k",
                         f"StudyInstanceUID={desk.studies[0].study_uid}", aet="OTHER",
                         check=False)
        assert "0xa801" in out.stdout + out.stderr
    finally:
        desk.close()
    with desk.site.catalog() as cat:
        refused = [(r["actor"], r["detail"]) for r in cat.query(
            "SELECT actor, detail FROM audit WHERE action = 'serve.refused' ORDER BY id")]
    assert [who for who, _ in refused] == [CLIENT_AET, "OTHER"]
    assert "may not call from this address" in refused[0][1]
    assert "ELSEWHERE" in refused[1][1]


def test_an_address_not_configured_is_cut_off(netns: None, tmp_path: Path) -> None:
    need_tool("findscu")
    desk = make_desk(tmp_path / "site", n_studies=1)
    _reconfigure(desk, 'address = "127.0.0.1"', 'address = "10.9.9.9"')
    desk.start()
    try:
        out = desk.dcmtk("findscu", "-S", "-k", "QueryRetrieveLevel=STUDY", "-k",
                         "PatientName=*", check=False)
        assert out.returncode != 0 and not find_answers(out)
    finally:
        desk.close()


def test_tls_only_with_a_certificate_of_the_site_ca(netns: None, tmp_path: Path) -> None:
    need_tool("findscu", "storescp")
    ca, certs = make_pki(tmp_path / "pki", ("tapearc", "workstation"))
    desk = make_desk(tmp_path / "site", n_studies=2, extra=(
        f'[serve.tls]\ncert = "{certs["tapearc"].cert}"\nkey = "{certs["tapearc"].key}"\n'
        f'ca = "{ca}"\n'))
    desk.start()
    tls = ["+tls", str(certs["workstation"].key), str(certs["workstation"].cert), "+cf", str(ca)]
    try:
        found = find_answers(desk.dcmtk("findscu", *tls, "-S", "-k", "QueryRetrieveLevel=STUDY",
                                        "-k", "PatientName=SMITH*", "-k", "StudyInstanceUID"))
        assert {a["StudyInstanceUID"] for a in found} == {s.study_uid for s in desk.studies}
        # a C-MOVE over TLS to a storescp that takes TLS only: both associations encrypted
        got = tmp_path / "got"
        got.mkdir()
        receiver = subprocess.Popen(["storescp", *tls, "-aet", CLIENT_AET, "-od", str(got),
                                     str(desk.client_port)])
        try:
            time.sleep(0.5)
            statuses = _move_over_tls(desk, ca, certs["workstation"], desk.studies[1].study_uid)
        finally:
            receiver.terminate()
            receiver.wait(10)
        assert statuses[-1] == 0x0000, statuses
        assert {str(dcmread(p).SOPInstanceUID) for p in got.iterdir()} == \
            {str(dcmread(p).SOPInstanceUID) for p in desk.studies[1].files}
        plain = desk.dcmtk("findscu", "-S", "-k", "QueryRetrieveLevel=STUDY", "-k",
                           "PatientName=*", check=False)
        assert plain.returncode != 0 and not find_answers(plain)
        anonymous = desk.dcmtk("findscu", "+tla", "+cf", str(ca), "-S", "-k",
                               "QueryRetrieveLevel=STUDY", "-k", "PatientName=*", check=False)
        assert anonymous.returncode != 0 and not find_answers(anonymous)
    finally:
        desk.close()


def _move_over_tls(desk: Desk, ca: Path, mine: CertFiles, study_uid: str) -> list[int]:
    """C-MOVE ``study_uid`` to the workstation with pynetdicom over TLS (dcmtk's movescu has no
    TLS); the statuses of the responses."""
    from pydicom.dataset import Dataset
    from pynetdicom import AE
    from pynetdicom.sop_class import (  # type: ignore[attr-defined]
        StudyRootQueryRetrieveInformationModelMove,
    )

    ae = AE(CLIENT_AET)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    tls = TlsOptions(ca_file=ca, cert_file=mine.cert, key_file=mine.key)
    assoc = ae.associate("127.0.0.1", desk.port, ae_title="TAPEARC",
                         tls_args=(tls.client_context(), "127.0.0.1"))
    assert assoc.is_established
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = study_uid
    try:
        return [int(status.Status) for status, _ in assoc.send_c_move(
            ds, CLIENT_AET, StudyRootQueryRetrieveInformationModelMove) if status]
    finally:
        assoc.release()


def test_every_query_and_retrieve_is_audited_and_the_log_has_no_phi(
    netns: None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    need_tool("findscu", "getscu")
    desk = make_desk(tmp_path / "site", n_studies=3)
    caplog.set_level(logging.DEBUG, logger="tapearc")
    desk.start()
    try:
        desk.dcmtk("findscu", "-S", "-k", "QueryRetrieveLevel=STUDY", "-k",
                   "PatientName=SMITH*", "-k", "StudyInstanceUID", "-k", "PatientID")
        got = tmp_path / "got"
        got.mkdir()
        desk.dcmtk("getscu", "-S", "-od", str(got), "-k", "QueryRetrieveLevel=STUDY",
                   "-k", f"StudyInstanceUID={desk.studies[0].study_uid}")
    finally:
        desk.close()
    with desk.site.catalog() as cat:
        rows = {r["action"]: r for r in cat.query(
            "SELECT action, actor, detail FROM audit WHERE action LIKE 'serve.%'")}
        assert cat.verify_audit()[1] is None
    find, get = rows["serve.find"], rows["serve.retrieve"]
    assert find["actor"] == CLIENT_AET and '"PatientName": "SMITH*"' in find["detail"]
    assert desk.studies[0].study_uid in find["detail"] and '"matches": 3' in find["detail"]
    assert get["actor"] == CLIENT_AET and desk.studies[0].study_uid in get["detail"]
    assert '"destination": "FINDSCU"' in get["detail"]
    # the desk's own lines (the test's runs of findscu are logged too, with their arguments)
    log = "\n".join(r.getMessage() for r in caplog.records
                    if r.name != "tapearc.support.process")
    assert "C-FIND from FINDSCU" in log and "retrieve by FINDSCU" in log
    for study in desk.studies:
        assert study.patient_id not in log
    for name in NAMES:
        assert name.split("^")[0] not in log.upper()
