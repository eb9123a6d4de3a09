"""DICOM matching over the catalog: name keys, wildcards as index range scans, dates, lists,
levels, the match limit, availability counts, and the migration of an older catalog."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tapearc.catalog import Catalog, NewInstance, create_catalog, open_catalog
from tapearc.catalog.matching import Condition, date_range, name_key, person_name
from tapearc.catalog.qr import TooManyMatches
from tapearc.catalog.schema import MIGRATIONS


def _inst(study: str, sop: str, name: str, pid: str, *, birth: str = "19700101",
          date: str = "20240101", modality: str = "CT", series: str = "1") -> NewInstance:
    return NewInstance(
        sop_uid=sop, series_uid=f"{study}.{series}", study_uid=study, sop_class="1.2.840.10008.5.1.4.1.1.2",
        transfer_syntax="1.2.840.10008.1.2.1", size=100, sha256=sop.ljust(64, "0")[:64],
        source_path=f"/pacs/{sop}", mtime_ns=1, patient_id=pid, patient_name=name,
        accession=f"ACC{study}", study_date=date, study_description="", modality=modality,
        series_number=int(series), series_description="", patient_birth_date=birth)


@pytest.fixture
def cat(tmp_path: Path) -> Iterator[Catalog]:
    with create_catalog(tmp_path / "c.sqlite") as c:
        c.add_instances([
            _inst("1.1", "1.1.1.1", "SMITH^JOHN", "P1"),
            _inst("1.1", "1.1.1.2", "SMITH^JOHN", "P1", series="2", modality="SR"),
            _inst("1.2", "1.2.1.1", "Smithers^Anna", "P2", date="20230505", modality="MR",
                  birth="19610202"),
            _inst("1.3", "1.3.1.1", "SMITH", "P3", date="20220101"),
            _inst("1.4", "1.4.1.1", "Müller^Jürgen=ミュラー^ユルゲン", "P4", date="20240301"),
            _inst("1.5", "1.5.1.1", "SMITH^JOHN", "P1", date="20200101"),
        ])
        yield c


def _studies(cat: Catalog, **keys: str) -> set[str]:
    return {r["StudyInstanceUID"] for r in cat.qr_find("STUDY", keys, 100)}


def test_name_key_folds_case_accents_spaces_and_empty_components() -> None:
    assert name_key("Müller ^ Jürgen^^") == "MULLER^JURGEN"
    assert name_key("smith^john=スミス^ジョン") == "SMITH^JOHN"
    assert name_key("  ") == "" and name_key(None) == ""


def test_person_name_matching_follows_the_dicom_rules(cat: Catalog) -> None:
    assert _studies(cat, PatientName="SMITH*") == {"1.1", "1.2", "1.3", "1.5"}
    assert _studies(cat, PatientName="smith") == {"1.3"}  # no wildcard: the whole name
    assert _studies(cat, PatientName="SMITH^JOHN") == {"1.1", "1.5"}
    assert _studies(cat, PatientName="SMITH^*") == {"1.1", "1.3", "1.5"}  # not SMITHERS
    assert _studies(cat, PatientName="SMITH?RS*") == {"1.2"}
    assert _studies(cat, PatientName="*ANNA") == {"1.2"}
    assert _studies(cat, PatientName="müller*") == {"1.4"}
    assert _studies(cat, PatientName="*") == {"1.1", "1.2", "1.3", "1.4", "1.5"}
    assert _studies(cat, PatientName="[SMITH]*") == set()  # [ is literal, not a GLOB class


def test_a_name_prefix_is_an_index_range_scan(cat: Catalog) -> None:
    cond = Condition()
    person_name(cond, "patient_name_key", "SMITH*")
    plan = " ".join(str(r[-1]) for r in cat.conn.execute(
        "EXPLAIN QUERY PLAN SELECT study_uid FROM studies" + cond.sql(), cond.params))
    assert "USING INDEX idx_studies_name_key (patient_name_key>? AND patient_name_key<?)" in plan


def test_dates_ids_lists_and_codes(cat: Catalog) -> None:
    assert _studies(cat, StudyDate="20230101-20240101") == {"1.1", "1.2"}
    assert _studies(cat, StudyDate="-20220101") == {"1.3", "1.5"}
    assert _studies(cat, StudyDate="20240301-") == {"1.4"}
    assert _studies(cat, StudyDate="20230505") == {"1.2"}
    assert _studies(cat, PatientBirthDate="19610202") == {"1.2"}
    assert _studies(cat, PatientID="P1") == {"1.1", "1.5"}
    assert _studies(cat, PatientID="p1") == set()  # LO matching keeps case
    assert _studies(cat, AccessionNumber="ACC1.?") == {"1.1", "1.2", "1.3", "1.4", "1.5"}
    assert _studies(cat, StudyInstanceUID="1.2\\1.4\\9.9") == {"1.2", "1.4"}
    assert _studies(cat, ModalitiesInStudy="SR") == {"1.1"}
    assert _studies(cat, ModalitiesInStudy="MR\\SR") == {"1.1", "1.2"}
    assert date_range("2024.01.31") == ("20240131", "20240131")
    with pytest.raises(ValueError):
        cat.qr_find("STUDY", {"StudyDate": "last week"}, 10)


def test_levels_count_what_is_below(cat: Catalog) -> None:
    [patient] = cat.qr_find("PATIENT", {"PatientID": "P1"}, 10)
    assert patient["NumberOfPatientRelatedStudies"] == 2
    assert patient["NumberOfPatientRelatedSeries"] == 3
    assert patient["NumberOfPatientRelatedInstances"] == 3
    assert sorted(patient["_studies"]) == ["1.1", "1.5"]
    [study] = cat.qr_find("STUDY", {"StudyInstanceUID": "1.1"}, 10)
    assert (study["NumberOfStudyRelatedSeries"], study["NumberOfStudyRelatedInstances"]) == (2, 2)
    assert study["ModalitiesInStudy"] == ["CT", "SR"]
    series = cat.qr_find("SERIES", {"StudyInstanceUID": "1.1", "Modality": "SR"}, 10)
    assert [(s["SeriesInstanceUID"], s["NumberOfSeriesRelatedInstances"]) for s in series] == \
        [("1.1.2", 1)]
    images = cat.qr_find("IMAGE", {"SeriesInstanceUID": "1.1.1"}, 10)
    assert [i["SOPInstanceUID"] for i in images] == ["1.1.1.1"]
    assert cat.qr_instances("SERIES", {"SeriesInstanceUID": "1.1.2"}, 10) == {"1.1": {"1.1.1.2"}}
    assert cat.qr_instances("PATIENT", {"PatientID": "P1"}, 10) == \
        {"1.1": {"1.1.1.1", "1.1.1.2"}, "1.5": {"1.5.1.1"}}


def test_more_matches_than_the_limit_is_refused_not_cut(cat: Catalog) -> None:
    assert len(cat.qr_find("STUDY", {"PatientName": "SMITH*"}, 4)) == 4
    with pytest.raises(TooManyMatches):
        cat.qr_find("STUDY", {"PatientName": "SMITH*"}, 3)
    with pytest.raises(TooManyMatches):
        cat.qr_instances("STUDY", {"PatientName": "*"}, 5)


def test_archived_counts_only_readable_copies(cat: Catalog) -> None:
    cat.add_cartridge("A00001", "A", "LTO", "site", 65536, None)
    ids = {r["sop_uid"]: r["id"] for r in cat.query("SELECT id, sop_uid FROM instances")}
    archive = {"archive_uuid": "u1", "barcode": "A00001", "data_file": 1, "start_block": 0,
               "data_blocks": 1, "index_bytes": 1, "block_size": 65536, "plaintext_bytes": 1,
               "header": b"h", "key_ids": [], "created": "2026-01-01T00:00:00+00:00"}
    cat.add_archive(archive, [(ids["1.1.1.1"], "m", 0, 1, "x")], None)
    counts = cat.archived_counts("STUDY", ["1.1", "1.2"], ["A00001"])
    assert set(counts) == {"1.1"}  # 1.2 has no copy at all
    assert (counts["1.1"].archived, counts["1.1"].on_given) == (1, 1)
    assert cat.archived_counts("STUDY", ["1.1"], ["B00009"])["1.1"].on_given == 0
    cat.set_cartridge_state("A00001", "retired", "worn")
    assert cat.archived_counts("STUDY", ["1.1"], ["A00001"]) == {}


def test_an_older_catalog_gets_name_keys_for_its_studies(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    before = MIGRATIONS.index(next(m for m in MIGRATIONS if m.__name__ == "_recall_desk"))
    for migration in MIGRATIONS[:before]:
        migration(conn)
    conn.execute("INSERT INTO studies (study_uid, patient_name, first_seen, updated)"
                 " VALUES ('1.9', 'Smith ^ Ann', 'x', 'x')")
    conn.close()
    with open_catalog(path) as cat:
        assert _studies(cat, PatientName="SMITH^ANN") == {"1.9"}
        assert cat.recall_requests() == []
