"""Tests of tapearc's DICOM networking and restore engine against a real Orthanc."""
