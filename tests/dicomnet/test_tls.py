"""DICOM TLS against Orthanc with DicomTlsEnabled: restore, pull, and Orthanc sending to our
TLS receiver; certificate checks on by default and failing closed."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tapearc.catalog.journal import Journal
from tapearc.dicomnet.inventory import PacsInventory
from tapearc.dicomnet.peer import Peer, TlsOptions
from tapearc.dicomnet.pull import Wanted, retrieve
from tapearc.dicomnet.query import QueryClient
from tapearc.dicomnet.receiver import Receiver, ReceiverPolicy, parse_allowed
from tapearc.errors import UnavailableError
from tapearc.jobs.delivery import run_restore, studies_in_folder
from tests.dicomnet.orthanc import PACS_AET, Orthanc, free_port
from tests.dicomnet.tlsca import make_pki


@pytest.fixture
def tls_pacs(start_orthanc: Callable[..., Orthanc], tmp_path: Path) -> tuple[Orthanc, Any, Any]:
    ca, certs = make_pki(tmp_path / "pki", ("orthanc", "tapearc", "rogue"))
    rx_port = free_port()
    orthanc = start_orthanc(
        modalities={"tapearc": {"AET": "TAPEARC", "Host": "127.0.0.1", "Port": rx_port,
                                "UseDicomTls": True}},
        extra={
            "DicomTlsEnabled": True,
            "DicomTlsCertificate": str(certs["orthanc"].cert),
            "DicomTlsPrivateKey": str(certs["orthanc"].key),
            "DicomTlsTrustedCertificates": str(ca),
            "DicomTlsRemoteCertificateRequired": True,
        },
    )
    return orthanc, (ca, certs), rx_port


def _peer(orthanc: Orthanc, tls: TlsOptions | None) -> Peer:
    return Peer(PACS_AET, "127.0.0.1", orthanc.dicom_port, tls)


def test_restore_reconcile_and_pull_over_tls(
    tls_pacs: tuple[Orthanc, Any, int], synth_studies: Path, db: Any, tmp_path: Path
) -> None:
    orthanc, (ca, certs), _ = tls_pacs
    tls = TlsOptions(ca_file=ca, cert_file=certs["tapearc"].cert, key_file=certs["tapearc"].key)
    peer = _peer(orthanc, tls)
    src = studies_in_folder(synth_studies)
    refs = src.refs
    report = run_restore(refs[:5], src.fetch, peer,
                         Journal.create(db, kind="restore", peer=str(peer)),
                         instances=src.instances)
    assert report.complete, report.to_dict()
    assert orthanc.statistics()["CountInstances"] == sum(r.expected_instances for r in refs[:5])
    with QueryClient(peer) as client:  # the reconcile's inventory, over TLS
        inventory = PacsInventory(client)
        inventory.sweep((None, None))
        inventory.list_studies(list(inventory.studies))
    assert {s.study_uid: s.instances for s in inventory.studies.values()} == {
        r.study_uid: r.expected_instances for r in refs[:5]}
    assert all(s.complete for s in inventory.studies.values())
    pulled = retrieve(peer, tmp_path / "staging", [Wanted(r.study_uid) for r in refs[:5]])
    assert pulled.ok and pulled.instances == orthanc.statistics()["CountInstances"]


def test_plain_tcp_to_a_tls_port_fails_cleanly(tls_pacs: tuple[Orthanc, Any, int]) -> None:
    orthanc, _, _ = tls_pacs
    with QueryClient(_peer(orthanc, None), timeout=5) as client, pytest.raises(UnavailableError):
        client.find_studies(date_range="19000101-")


def test_untrusted_server_certificate_is_refused_by_default(
    tls_pacs: tuple[Orthanc, Any, int], tmp_path: Path
) -> None:
    orthanc, (_, certs), _ = tls_pacs
    other_ca, _ = make_pki(tmp_path / "other", ())
    tls = TlsOptions(ca_file=other_ca, cert_file=certs["tapearc"].cert,
                     key_file=certs["tapearc"].key)
    with QueryClient(_peer(orthanc, tls), timeout=5) as client, pytest.raises(UnavailableError):
        client.find_studies(date_range="19000101-")
    # the same with checks off works (and is the user's explicit choice)
    insecure = TlsOptions(ca_file=other_ca, cert_file=certs["tapearc"].cert,
                          key_file=certs["tapearc"].key, verify=False)
    with QueryClient(_peer(orthanc, insecure), timeout=5) as client:
        assert client.find_studies(date_range="19000101-") == []


def test_client_without_certificate_is_refused_by_orthanc(
    tls_pacs: tuple[Orthanc, Any, int],
) -> None:
    orthanc, (ca, _), _ = tls_pacs
    with QueryClient(_peer(orthanc, TlsOptions(ca_file=ca)), timeout=5) as client, \
            pytest.raises(UnavailableError):
        client.find_studies(date_range="19000101-")


def test_orthanc_sends_to_our_tls_receiver(
    tls_pacs: tuple[Orthanc, Any, int], synth_studies: Path, tmp_path: Path
) -> None:
    orthanc, (ca, certs), rx_port = tls_pacs
    files = sorted(p for p in synth_studies.rglob("*.dcm"))[:6]
    for f in files:
        orthanc.upload(f)
    tls = TlsOptions(ca_file=ca, cert_file=certs["tapearc"].cert, key_file=certs["tapearc"].key)
    allow = ReceiverPolicy((parse_allowed(f"{PACS_AET}@127.0.0.1"),))
    with Receiver(tmp_path / "staging", host="127.0.0.1", port=rx_port, tls=tls,
                  policy=allow) as rx:
        orthanc.request("POST", "/modalities/tapearc/store", json.dumps(
            {"Resources": orthanc.get("/instances"), "Synchronous": True}).encode())
        assert rx.writer.written == len(files)


def test_receiver_with_checks_needs_a_ca(tmp_path: Path) -> None:
    from tapearc.errors import ConfigError

    _, certs = make_pki(tmp_path / "pki", ("rx",))
    with pytest.raises(ConfigError, match="needs the CA"):
        TlsOptions(cert_file=certs["rx"].cert, key_file=certs["rx"].key).server_context()
