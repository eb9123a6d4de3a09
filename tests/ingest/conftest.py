"""The DICOM network tests' Orthanc fixtures (private network namespace, real Orthanc), shared
with the ingest tests that read an Orthanc storage area."""

from tests.dicomnet.conftest import netns, start_orthanc

__all__ = ["netns", "start_orthanc"]
