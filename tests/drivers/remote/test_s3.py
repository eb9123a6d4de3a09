"""The s3 driver against a real S3 server (SeaweedFS): Object Lock holds against a stolen key,
a multipart upload resumes after the server was killed, recall reads only the study's bytes,
and the catalog is rebuilt from the bucket's indexes alone."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tapearc.drivers.remote.s3 import S3Store
from tapearc.errors import WriteProtected
from tapearc.jobs.catalog import rebuild_catalog
from tapearc.jobs.media import open_drive
from tapearc.jobs.recall import recall
from tapearc.jobs.stream import Backoff, Cycle, stream_cycle, stream_table
from tapearc.jobs.verify import verify_cartridge
from tests.drivers.remote.servers import Weed, session_weed
from tests.jobs.offsite import offsite_site
from tests.jobs.site import Site
from tests.synth import generate_studies


def _ship(site: Site) -> Cycle:
    with site.catalog() as cat:
        return stream_cycle(site.settings, cat, Backoff(stream_table(site.settings)), flush=True)


def _s3(weed: Weed, bucket: str, **extra: object) -> dict[str, object]:
    return {"driver": "s3", **weed.table(bucket, **extra)}


def test_a_stolen_key_can_neither_delete_nor_change_a_locked_copy(tmp_path: Path) -> None:
    weed = session_weed()
    bucket = weed.bucket(f"lock-{uuid.uuid4().hex[:12]}", lock=True)
    site = offsite_site(tmp_path / "site", _s3(weed, bucket, object_lock="compliance",
                                               retention_days=1))
    studies = generate_studies(site.pacs, 2, instances_per_study=4, pixel_bytes=64 << 10)
    assert _ship(site).shipped["OFF"].archives == 1
    thief: Any = weed.client()  # the same key tapearc holds
    versions = thief.list_object_versions(Bucket=bucket, Prefix="tapearc/NET001/")["Versions"]
    written = {v["Key"]: v["VersionId"] for v in versions}
    assert sorted(written) == ["tapearc/NET001/000001.data", "tapearc/NET001/000001.index",
                               "tapearc/NET001/label.json"]
    for key, version in written.items():
        held = thief.head_object(Bucket=bucket, Key=key, VersionId=version)
        assert held["ObjectLockMode"] == "COMPLIANCE"
        with pytest.raises(thief.exceptions.ClientError, match="AccessDenied"):
            thief.delete_object(Bucket=bucket, Key=key, VersionId=version)
        thief.put_object(Bucket=bucket, Key=key, Body=b"ransom note")  # only a newer version
        thief.delete_object(Bucket=bucket, Key=key)  # only a delete marker
        kept = thief.get_object(Bucket=bucket, Key=key, VersionId=version)["Body"].read()
        assert kept != b"ransom note" and len(kept) == held["ContentLength"]
    with pytest.raises(thief.exceptions.ClientError):  # the key as the bucket shows it: gone
        thief.get_object(Bucket=bucket, Key="tapearc/NET001/000001.index")
    # tapearc reads what it wrote: the archive is listed, verifies, and recalls
    with site.catalog() as cat:
        checked = verify_cartridge(site.settings, cat, "NET001", identities=[site.identity])
        [got] = recall(site.settings, cat, [studies[0].study_uid], tmp_path / "out",
                       identities=[site.identity])
    assert checked.checked == 1 and not checked.failures, checked.failures
    assert got.verified and got.cartridge == "NET001"
    driver = open_drive(site.settings, "off")
    try:
        assert len(driver.list_archives()) == 1
        label = driver.read_label()
        assert label is not None and label.barcode == "NET001"
        with pytest.raises(WriteProtected):  # an erase is refused by the store too
            driver.write_label(label, force=True)
        assert len(driver.list_archives()) == 1
    finally:
        driver.close()


def test_a_multipart_upload_resumes_after_the_server_was_killed(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    weed = Weed(tmp_path / "weed")  # its own server: this test kills it
    try:
        bucket = weed.bucket("resume")
        site = offsite_site(tmp_path / "site", _s3(weed, bucket, rate="10MB/s", attempts=60,
                                                   backoff=0.5, backoff_max=1, connect_timeout=2))
        generate_studies(site.pacs, 2, instances_per_study=10, pixel_bytes=1 << 20)  # ~21 MB
        s3: Any = weed.client()
        killed: list[int] = []

        def kill_mid_upload() -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                uploads = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
                if uploads:
                    parts = s3.list_parts(Bucket=bucket, Key=uploads[0]["Key"],
                                          UploadId=uploads[0]["UploadId"]).get("Parts", [])
                    if len(parts) >= 2:
                        killed.append(len(parts))
                        weed.kill()
                        time.sleep(1)
                        weed.start()
                        return
                time.sleep(0.1)

        killer = threading.Thread(target=kill_mid_upload)
        killer.start()
        caplog.set_level("WARNING", logger="tapearc")
        try:
            cycle = _ship(site)
        finally:
            killer.join()
        assert killed, "the upload finished before the server could be killed"
        assert not cycle.failures and cycle.shipped["OFF"].archives == 1, cycle.line()
        assert "trying again" in caplog.text
        keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="tapearc/NET001/")
                      ["Contents"])
        assert keys == ["tapearc/NET001/000001.data", "tapearc/NET001/000001.index",
                        "tapearc/NET001/label.json"]
        assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")
        with site.catalog() as cat:
            assert len(cat.archives("NET001")) == 1 and cat.queue("OFF")[0] == 0
            checked = verify_cartridge(site.settings, cat, "NET001", identities=[site.identity])
        assert checked.checked == 1 and not checked.failures
    finally:
        weed.kill()


def test_recall_reads_only_the_study_and_rebuild_reads_only_indexes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weed = session_weed()
    bucket = weed.bucket(f"recall-{uuid.uuid4().hex[:12]}")
    site = offsite_site(tmp_path / "site", _s3(weed, bucket), stream={"max_bytes": "64 MiB"})
    studies = generate_studies(site.pacs, 3, instances_per_study=8, pixel_bytes=256 << 10)
    assert _ship(site).shipped["OFF"].archives == 1
    fetched: list[tuple[str, int]] = []
    original = S3Store.read

    def spy(self: S3Store, name: str, offset: int = 0, length: int | None = None) -> bytes | None:
        data = original(self, name, offset, length)
        fetched.append((name, len(data or b"")))
        return data

    monkeypatch.setattr(S3Store, "read", spy)
    with site.catalog() as cat:
        [got] = recall(site.settings, cat, [studies[1].study_uid], tmp_path / "out",
                       identities=[site.identity])
    data_bytes = sum(n for name, n in fetched if name.endswith(".data"))
    assert got.verified and got.instances == 8
    assert data_bytes <= 1.05 * got.bytes, (data_bytes, got.bytes)
    fetched.clear()
    site.settings.catalog_path.unlink()
    report = rebuild_catalog(site.settings, ["off"], identities=[site.identity])
    assert report.archives == 1 and report.instances == 24
    assert fetched and not [name for name, _ in fetched if name.endswith(".data")]
