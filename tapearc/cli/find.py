"""``tapearc find``: look studies up in the catalog."""

from __future__ import annotations

from typing import Annotated

import typer

from tapearc.cli._common import (
    JsonOption,
    human_bytes,
    parse_day,
    print_json,
    print_table,
    state,
)


def register(app: typer.Typer) -> None:
    """Add the command to ``app``."""
    app.command("find")(find)


def find(
    ctx: typer.Context,
    study_uid: Annotated[str | None, typer.Option("--study-uid", help="Study Instance UID.")] = None,
    patient_id: Annotated[str | None, typer.Option("--patient-id", help="Patient ID.")] = None,
    accession: Annotated[str | None, typer.Option("--accession", help="Accession number.")] = None,
    date_from: Annotated[
        str | None, typer.Option("--from", help="Study date from (YYYYMMDD or YYYY-MM-DD).")
    ] = None,
    date_to: Annotated[str | None, typer.Option("--to", help="Study date to (inclusive).")] = None,
    modality: Annotated[str | None, typer.Option("--modality", help="e.g. CT, MR, CR.")] = None,
    patient_name: Annotated[str | None, typer.Option(
        "--patient-name", help="Patient name as DICOM writes it (FAMILY^GIVEN); * and ? are "
        "wildcards, case and accents are ignored: 'smith*'.")] = None,
    birth_date: Annotated[str | None, typer.Option(
        "--birth-date", help="Patient's birth date (YYYYMMDD or YYYY-MM-DD).")] = None,
    limit: Annotated[int, typer.Option("--limit", help="At most this many studies.")] = 1000,
    as_json: JsonOption = False,
) -> None:
    """Find studies by UID, patient, accession, date range or modality, with where each copy is
    and whether it can be read now (NEARLINE) or needs a cartridge fetched (OFFLINE)."""
    from tapearc.catalog import StudyFilter, open_catalog
    from tapearc.errors import UsageError
    from tapearc.jobs.find import find_studies

    if limit < 1:
        raise UsageError(f"--limit {limit}: give 1 or more")
    first, last = _date(date_from), _date(date_to)
    if first and last and first > last:
        raise UsageError(f"--from {date_from} is after --to {date_to}")
    flt = StudyFilter(
        study_uid=study_uid, patient_id=patient_id, accession=accession,
        date_from=first, date_to=last,
        modality=modality.upper() if modality else None, limit=limit,
        patient_name=patient_name, birth_date=_date(birth_date),
    )
    settings = state(ctx).settings()
    with open_catalog(settings.catalog_path) as catalog:
        studies = find_studies(settings, catalog, flt)
    if as_json:
        print_json({"studies": studies})
        return
    pools = sorted({p for s in studies for p in s["copies"]})
    print_table(
        f"{len(studies)} studies",
        ["study UID", "patient ID", "patient name", "born", "accession", "date", "modalities",
         "instances", "size", "availability", *[f"pool {p}" for p in pools]],
        (
            [s["study_uid"], s["patient_id"], s["patient_name"], s["birth_date"], s["accession"],
             s["study_date"], ",".join(s["modalities"]), s["instances"], human_bytes(s["bytes"]),
             s["availability"],
             *[" ".join(f"{b} ({s['places'][b]})" for b in s["copies"].get(p, [])) or "-"
               for p in pools]]
            for s in studies
        ),
    )


def _date(value: str | None) -> str | None:
    """Accept YYYY-MM-DD as well as DICOM's YYYYMMDD."""
    day = parse_day(value)
    return None if day is None else day.strftime("%Y%m%d")
