"""Restore, migrate and recall-to-PACS: studies from the cartridges into a running PACS.

The engine (``tapearc.jobs.delivery.run_restore``) sends, confirms and journals; this job gives it the
studies from the catalog (each with the cartridge and position it will be read from) and a
``fetch`` that recalls them, one study at a time, with the same positioned, checksum-verified
read as ``tapearc recall``. Each study's files are deleted once the engine moves on.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from tapearc.catalog.db import Catalog, StudyFilter, actor
from tapearc.catalog.journal import Journal, StudyRef
from tapearc.config import Settings
from tapearc.errors import NotFound
from tapearc.jobs.delivery import Fetch, RestoreReport, SendOptions, run_restore
from tapearc.jobs.media import loaded_drives
from tapearc.jobs.recall import choose_cartridge, raise_for, recall

if TYPE_CHECKING:
    from tapearc.dicomnet.peer import Peer
    from tapearc.format.keys import Identity


def study_refs(settings: Settings, catalog: Catalog,
               study_uids: Sequence[str] | None) -> list[StudyRef]:
    """The studies to send (all archived ones when ``study_uids`` is None), with the cartridge
    and position each will be read from."""
    if study_uids is None:
        uids = [s["study_uid"] for s in catalog.find_studies(StudyFilter(limit=10**9))]
    else:
        uids = list(dict.fromkeys(study_uids))
    loaded = loaded_drives(settings)
    refs: list[StudyRef] = []
    for uid in uids:
        rows = catalog.copy_rows(uid)
        if not rows:
            if study_uids is None:
                continue  # not archived yet: nothing on the media to restore
            raise NotFound(f"study {uid} has no archived copy", hint="tapearc find")
        barcode = choose_cartridge(rows, loaded)
        first = min((r for r in rows if r["barcode"] == barcode),
                    key=lambda r: (r["data_file"], r["data_offset"]))
        # position: a sort key in medium order (file number, then plaintext offset)
        position = first["data_file"] * 2**40 + first["data_offset"]
        refs.append(StudyRef(uid, catalog.study_date(uid),
                             len({r["instance_id"] for r in rows}), barcode, position))
    return refs


def recall_fetch(settings: Settings, catalog: Catalog, identities: Sequence[Identity] | None,
                 damaged: list[str] | None = None) -> Fetch:
    """A ``fetch`` for the engine that recalls each study from its cartridge into ``workdir``.

    A study the medium cannot give back (or that fails a check) is read from another loaded
    copy by the recall; what was read around goes into ``damaged``.
    """

    def fetch(studies: list[StudyRef], workdir: Path) -> Iterator[tuple[StudyRef, list[Path]]]:
        for ref in studies:
            folder = workdir / ref.study_uid
            results = recall(settings, catalog, [ref.study_uid], folder, identities=identities)
            if damaged is not None:
                damaged.extend(f"{ref.study_uid}: {n}" for n in results[0].notes)
            raise_for(results)  # a cartridge to load or a bad checksum stops the run (resumable)
            try:
                yield ref, sorted(results[0].files)
            finally:
                shutil.rmtree(folder, ignore_errors=True)

    return fetch


@dataclass(frozen=True)
class RestoreRequest:
    """What to send where: ``study_uids`` (None: every archived study) to ``peer``; ``kind``
    names the job in the journal (restore, migrate, recall); ``resume`` continues the last
    unfinished job of that kind to that PACS; ``identities`` (None: the configured private keys)
    open the archives."""

    peer: Peer
    study_uids: Sequence[str] | None
    kind: str = "restore"
    resume: bool = False
    send: SendOptions = field(default_factory=SendOptions)
    identities: Sequence[Identity] | None = None


def restore_to_pacs(settings: Settings, catalog: Catalog, request: RestoreRequest) -> RestoreReport:
    """Send studies from the media to a PACS, journalled and audited (``RestoreRequest``)."""
    from tapearc.jobs.keys import load_identities_for

    refs = study_refs(settings, catalog, request.study_uids)
    identities = request.identities
    if identities is None and refs:
        identities = load_identities_for(settings, None)
    peer, kind = request.peer, request.kind
    job_id = Journal.latest(catalog, peer=str(peer), kind=kind) if request.resume else None
    journal = (Journal.open(catalog, job_id) if job_id is not None
               else Journal.create(catalog, kind=kind, peer=str(peer)))
    catalog.audit(kind, None, {"who": actor(), "to": str(peer), "job": journal.job_id,
                               "studies": len(refs), "resume": job_id is not None})
    from tapearc.support.safefs import private_workdir

    send = request.send
    with contextlib.ExitStack() as stack:
        if send.workdir is None:  # decrypted images wait in the site's private folder, never /tmp
            workdir = stack.enter_context(private_workdir(settings.private_dir, "restore"))
            send = replace(send, workdir=workdir)
        damaged: list[str] = []
        return run_restore(refs, recall_fetch(settings, catalog, identities, damaged), peer,
                           journal, send, damaged=damaged)
