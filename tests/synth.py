"""Synthetic DICOM studies for tests, benchmarks and the demo (no real patient data).

Each study is CT, MR or CR with valid UIDs, realistic header attributes and pixel data of the
requested size, written as Explicit VR Little Endian Part-10 files in an Orthanc-like layout
(extensionless file names) or a plain STUDY/SERIES tree.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# (modality, SOP class UID, rows, columns, bits allocated, instances per series)
_PROFILES: dict[str, tuple[str, int, int, int]] = {
    "CT": ("1.2.840.10008.5.1.4.1.1.2", 512, 512, 16),
    "MR": ("1.2.840.10008.5.1.4.1.1.4", 256, 256, 16),
    "CR": ("1.2.840.10008.5.1.4.1.1.1", 2048, 2500, 16),
}


@dataclass(frozen=True)
class SynthStudy:
    """What was generated, so tests can check the catalog against it."""

    study_uid: str
    patient_id: str
    accession: str
    study_date: str
    modality: str
    files: tuple[Path, ...]
    nbytes: int


def generate_studies(
    root: Path,
    n_studies: int,
    *,
    instances_per_study: int = 10,
    series_per_study: int = 2,
    pixel_bytes: int | None = None,
    modalities: tuple[str, ...] = ("CT", "MR", "CR"),
    seed: int = 1,
    layout: str = "tree",
    study_dates: Sequence[str] | None = None,
    patient_names: Sequence[str] = (),
    birth_dates: Sequence[str] = (),
) -> list[SynthStudy]:
    """Write ``n_studies`` synthetic studies under ``root`` and return what was written.

    ``pixel_bytes`` overrides the natural image size (rows*cols*2) so tests stay small and
    benchmarks can reach a volume quickly. ``layout`` is ``"tree"`` (STUDY/SERIES/SOP.dcm) or
    ``"flat"`` (Orthanc-like: two-level hash folders and extensionless UUID-ish names).
    ``study_dates`` gives study ``s`` the date ``study_dates[s % len]`` (``""``: empty) instead
    of a random one from 2010-2025.
    ``patient_names``/``birth_dates``, when given, are used in turn (study ``s`` gets entry
    ``s % len``), instead of ``SYNTHETIC^PATIENTnnnnn`` born 19700101.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

    rng = random.Random(seed)
    studies: list[SynthStudy] = []
    for s in range(n_studies):
        modality = modalities[s % len(modalities)]
        sop_class, rows, cols, bits = _PROFILES[modality]
        nbytes_pixels = pixel_bytes if pixel_bytes is not None else rows * cols * bits // 8
        # keep rows*cols*2 == pixel bytes so the header agrees with the payload
        rows, cols = _shape_for(nbytes_pixels)
        study_uid = generate_uid(entropy_srcs=[f"study-{seed}-{s}"])
        patient_id = f"SYN{seed:02d}{s:06d}"
        accession = f"ACC{seed:02d}{s:07d}"
        study_date = f"20{10 + rng.randrange(16):02d}{1 + rng.randrange(12):02d}{1 + rng.randrange(28):02d}"
        if study_dates:  # after the draw, so the rest of the random stream is unchanged
            study_date = study_dates[s % len(study_dates)]
        files: list[Path] = []
        total = 0
        series_uids = [
            generate_uid(entropy_srcs=[f"series-{seed}-{s}-{k}"]) for k in range(series_per_study)
        ]
        pixel_payload = rng.randbytes(rows * cols * 2)
        for i in range(instances_per_study):
            series_index = i % series_per_study
            sop_uid = generate_uid(entropy_srcs=[f"sop-{seed}-{s}-{i}"])
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = UID(sop_class)
            meta.MediaStorageSOPInstanceUID = sop_uid
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            meta.ImplementationClassUID = UID("1.2.826.0.1.3680043.10.1543.1")
            ds = Dataset()
            ds.file_meta = meta
            ds.SOPClassUID = sop_class
            ds.SOPInstanceUID = sop_uid
            ds.StudyInstanceUID = study_uid
            ds.SeriesInstanceUID = series_uids[series_index]
            if patient_names:
                ds.SpecificCharacterSet = "ISO_IR 192"
            ds.PatientName = (patient_names[s % len(patient_names)] if patient_names
                              else f"SYNTHETIC^PATIENT{s:05d}")
            ds.PatientID = patient_id
            ds.PatientBirthDate = birth_dates[s % len(birth_dates)] if birth_dates else "19700101"
            ds.PatientSex = "O"
            ds.AccessionNumber = accession
            ds.StudyDate = study_date
            ds.StudyTime = "101500"
            ds.StudyDescription = f"SYNTHETIC {modality} STUDY"
            ds.StudyID = str(s)
            ds.Modality = modality
            ds.SeriesNumber = series_index + 1
            ds.InstanceNumber = i + 1
            ds.Rows = rows
            ds.Columns = cols
            ds.BitsAllocated = 16
            ds.BitsStored = 12
            ds.HighBit = 11
            ds.PixelRepresentation = 0
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.PixelData = pixel_payload
            path = _path_for(root, layout, study_uid, series_uids[series_index], sop_uid, rng)
            path.parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(path, enforce_file_format=True)
            files.append(path)
            total += path.stat().st_size
        studies.append(
            SynthStudy(study_uid, patient_id, accession, study_date, modality, tuple(files), total)
        )
    return studies


def _shape_for(pixel_bytes: int) -> tuple[int, int]:
    """Rows and columns of a 16-bit image of about ``pixel_bytes`` bytes (at least 1x1)."""
    pixels = max(1, pixel_bytes // 2)
    cols = 1
    while cols * cols < pixels:
        cols *= 2
    rows = max(1, pixels // cols)
    return rows, cols


def _path_for(
    root: Path, layout: str, study: str, series: str, sop: str, rng: random.Random
) -> Path:
    if layout == "tree":
        return root / study / series / f"{sop}.dcm"
    if layout == "flat":
        name = "%08x-%04x-%04x-%04x-%012x" % (  # noqa: UP031 - fixed-width hex fields
            rng.getrandbits(32), rng.getrandbits(16), rng.getrandbits(16),
            rng.getrandbits(16), rng.getrandbits(48),
        )
        return root / name[:2] / name[2:4] / name
    raise ValueError(f"unknown layout {layout!r}")

