"""``tapearc find``: studies from the catalog, with where each copy is and how available the
study is (``jobs.availability``)."""

from __future__ import annotations

from typing import Any

from tapearc.catalog.db import Catalog, StudyFilter
from tapearc.config import Settings
from tapearc.jobs.availability import availability, current_reach


def find_studies(settings: Settings, catalog: Catalog, flt: StudyFilter) -> list[dict[str, Any]]:
    """The ``find --json`` studies: the catalog's fields, plus ``availability`` (NEARLINE,
    OFFLINE or UNAVAILABLE) and ``places`` (barcode -> drive, library, shelf, vault ...)."""
    studies = catalog.find_studies(flt)
    if not studies:
        return studies
    reach = current_reach(settings, catalog)
    counts = catalog.archived_counts("STUDY", [s["study_uid"] for s in studies],
                                     sorted(reach.barcodes))
    for study in studies:
        study["availability"] = availability(counts.get(study["study_uid"]))
        study["places"] = {code: reach.place(code, where)
                           for code, where in study["locations"].items()}
    return studies
