"""Storage Commitment against Orthanc: it commits what it holds and reports what it lacks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tapearc.dicomnet.commitment import CommitmentListener
from tapearc.dicomnet.fileinfo import read_info
from tapearc.dicomnet.peer import Peer
from tapearc.dicomnet.sender import StoreSender
from tests.dicomnet.orthanc import PACS_AET, Orthanc, free_port
from tests.synth import generate_studies


def test_commitment_confirms_stored_and_flags_missing(
    start_orthanc: Callable[..., Orthanc], tmp_path: Path
) -> None:
    port = free_port()
    orthanc = start_orthanc(
        modalities={"tapearc": {"AET": "TAPEARC", "Host": "127.0.0.1", "Port": port}}
    )
    peer = Peer(PACS_AET, "127.0.0.1", orthanc.dicom_port)
    files = list(generate_studies(tmp_path, 1, instances_per_study=5, pixel_bytes=1024)[0].files)
    infos = [read_info(f) for f in files]
    with StoreSender(peer) as sender:
        sender.send(files[:4])  # the fifth never goes
    with CommitmentListener(aet="TAPEARC", host="127.0.0.1", port=port, peer=peer) as listener:
        result = listener.request([(i.sop_class, i.sop_instance) for i in infos], timeout=20)
    assert result.committed == {i.sop_instance for i in infos[:4]}
    assert set(result.failed) == {infos[4].sop_instance}


def test_restore_confirmed_by_storage_commitment(
    start_orthanc: Callable[..., Orthanc], synth_studies: Path, db: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from tapearc.catalog.journal import Journal
    from tapearc.jobs.delivery import SendOptions, run_restore, studies_in_folder

    port = free_port()
    orthanc = start_orthanc(
        modalities={"tapearc": {"AET": "TAPEARC", "Host": "127.0.0.1", "Port": port}}
    )
    peer = Peer(PACS_AET, "127.0.0.1", orthanc.dicom_port)
    src = studies_in_folder(synth_studies)
    report = run_restore(src.refs[:4], src.fetch, peer,
                         Journal.create(db, kind="restore", peer=str(peer)),
                         SendOptions(commitment=("127.0.0.1", port)), instances=src.instances)
    assert report.complete, report.to_dict()
    assert "confirming by C-FIND" not in caplog.text  # the reports came back


def test_commitment_without_pacs_knowing_us_falls_back_to_cfind(
    orthanc: Orthanc, pacs: Peer, synth_studies: Path, db: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from tapearc.catalog.journal import Journal
    from tapearc.jobs.delivery import SendOptions, run_restore, studies_in_folder

    src = studies_in_folder(synth_studies)
    report = run_restore(src.refs[:2], src.fetch, pacs,
                         Journal.create(db, kind="restore", peer=str(pacs)),
                         SendOptions(commitment=("127.0.0.1", free_port()), timeout=2),
                         instances=src.instances)
    assert report.complete, report.to_dict()
    # Orthanc aborts an N-ACTION from an AE it does not know; asked once, then C-FIND only
    assert caplog.text.count("confirming by C-FIND") == 1
