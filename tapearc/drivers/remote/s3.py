"""``driver = "s3"``: volumes in S3-compatible object storage, through boto3.

* Data objects go up as multipart uploads of ``part_size`` parts, each with its SHA-256, which
  the server checks; a part whose request fails (a cut link, a restarted server) is sent again
  into the same upload, so an archive resumes where the server's acknowledgements stopped. An
  archive smaller than one part is one PUT. Completing the upload, the server reports the
  SHA-256 of its parts' digests, compared with the parts sent.
* Reads are ranged GETs: a recall fetches only the study's blocks.
* With ``object_lock``, every label, data and index object is written with a retention
  (``COMPLIANCE`` or ``GOVERNANCE`` until ``retention_days`` from now): the store itself refuses
  to delete or change it, whatever key the caller holds. An overwrite only adds a newer
  version and a delete only a delete marker, so this store reads the first version of each
  name and lists names by their versions: what tapearc wrote stays what it reads.
* Credentials come from ``credentials`` (a shared-credentials file) or boto3's environment
  (``AWS_ACCESS_KEY_ID``...), never from the configuration file or a command line.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, TypeVar

from tapearc.drivers.base import Driver
from tapearc.drivers.options import DriveOptions, S3Options, expect
from tapearc.drivers.remote.driver import RemoteDriver
from tapearc.drivers.remote.store import Confirmed, RemoteStore, RetryPolicy, Upload
from tapearc.errors import DeviceError, DeviceUnavailable, TapearcError, WriteProtected

log = logging.getLogger(__name__)

T = TypeVar("T")


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


class _Refused(Exception):
    """The server answered, and said no (not the link): never tried again."""

    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.status = code, status


class S3Store(RemoteStore):
    """Objects under ``prefix/`` in one bucket."""

    def __init__(self, options: S3Options, drive: str) -> None:
        self.o = options
        self.drive = drive
        self.where = f"s3://{options.bucket}/{options.prefix}"
        self.immutable = options.object_lock is not None
        self.policy = RetryPolicy(options.attempts, options.backoff, options.backoff_max)
        self._client: Any = None
        self._first: dict[str, tuple[str, int]] = {}  # name -> (first version id, size)

    # --- the connection ----------------------------------------------------------------------

    def client(self) -> Any:
        if self._client is not None:
            return self._client
        import boto3
        import botocore.session
        from botocore.config import Config

        o = self.o
        core = botocore.session.Session()
        if o.credentials is not None:
            core.set_config_variable("credentials_file", str(o.credentials))
            core.set_config_variable("profile", o.profile)
        session = boto3.session.Session(botocore_session=core, region_name=o.region)
        config = Config(connect_timeout=o.connect_timeout, read_timeout=o.read_timeout,
                        retries={"max_attempts": 1}, s3={"addressing_style": o.addressing},
                        request_checksum_calculation="when_required",
                        response_checksum_validation="when_required")
        self._client = session.client("s3", endpoint_url=o.endpoint, config=config,
                                      verify=str(o.ca_bundle) if o.ca_bundle else None)
        return self._client

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

    def call(self, what: str, work: Callable[[Any], T], *, retry: bool = True) -> T:
        """``work(client)``; a failed link or a server error (5xx) is tried again, a refusal
        (``_Refused``: 4xx) is not."""
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        def once() -> T:
            try:
                return work(self.client())
            except ClientError as exc:
                err = exc.response.get("Error", {})
                status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
                if status >= 500 or status == 0:
                    raise DeviceError(f"{self.where}: {what}: {err.get('Code')} "
                                      f"{err.get('Message', '')}".strip()) from None
                raise _Refused(str(err.get("Code")), str(err.get("Message", "")), status) from None
            except NoCredentialsError:
                raise DeviceUnavailable(
                    f"{self.where}: no credentials", hint=f"set drives.{self.drive}.credentials "
                    "to a credentials file, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY") from None
            except BotoCoreError as exc:  # connection refused, reset, timed out
                raise DeviceError(f"{self.where}: {what}: {exc}") from None

        try:
            return self.policy.run(once, f"{self.where}: {what}", self.close) if retry else once()
        except _Refused as exc:
            if exc.code in ("AccessDenied", "ObjectLocked", "InvalidRequest") and "remove" in what:
                raise WriteProtected(f"{self.where}: {what}: the store refuses ({exc})",
                                     hint="the object is under Object Lock retention") from None
            raise DeviceError(f"{self.where}: {what}: the store refuses ({exc})") from None

    def key(self, name: str) -> str:
        return f"{self.o.prefix}/{name}"

    def _locked(self, name: str) -> bool:
        """Objects that keep their first version: all but the drive's ``.DRIVE.loaded``."""
        return self.immutable and not name.rsplit("/", 1)[-1].startswith(".")

    def _lock_args(self, name: str) -> dict[str, Any]:
        if not self._locked(name):
            return {}
        until = datetime.now(UTC) + timedelta(days=self.o.retention_days)
        return {"ObjectLockMode": str(self.o.object_lock).upper(),
                "ObjectLockRetainUntilDate": until}

    def _versions(self, client: Any, prefix: str) -> dict[str, tuple[str, int]]:
        """For every name under ``prefix``: its first version and that version's size."""
        # S3 lists each key's versions newest first (LastModified has whole seconds only, so
        # it cannot order versions written within a second): the last one listed is the first
        first: dict[str, tuple[str, int]] = {}
        for page in client.get_paginator("list_object_versions").paginate(
                Bucket=self.o.bucket, Prefix=prefix):
            for v in page.get("Versions", []):
                first[v["Key"]] = (v["VersionId"], int(v["Size"]))
        return first

    def _first_version(self, client: Any, name: str) -> tuple[str, int] | None:
        if name not in self._first:
            found = self._versions(client, self.key(name)).get(self.key(name))
            if found is None:
                return None
            self._first[name] = found
        return self._first[name]

    # --- the store ---------------------------------------------------------------------------

    def read(self, name: str, offset: int = 0, length: int | None = None) -> bytes | None:
        if length == 0:
            return b""

        def work(client: Any) -> bytes | None:
            args: dict[str, Any] = {"Bucket": self.o.bucket, "Key": self.key(name)}
            if self._locked(name):
                first = self._first_version(client, name)
                if first is None:
                    return None
                args["VersionId"] = first[0]
            if offset or length is not None:
                last = "" if length is None else str(offset + length - 1)
                args["Range"] = f"bytes={offset}-{last}"
            try:
                return bytes(client.get_object(**args)["Body"].read())
            except client.exceptions.NoSuchKey:
                return None
            except client.exceptions.ClientError as exc:
                code = exc.response.get("Error", {}).get("Code")
                if code == "InvalidRange":
                    return b""  # past the end
                if code in ("404", "NoSuchKey", "NoSuchVersion"):
                    return None
                raise

        data = self.call(f"read {name}", work)
        if data is not None:
            self.bytes_read += len(data)
        return data

    def names(self, folder: str) -> dict[str, int]:
        prefix = self.key(f"{folder}/" if folder else "")

        def work(client: Any) -> dict[str, int]:
            found: dict[str, int] = {}
            if self.immutable:  # by versions: a delete marker hides nothing from tapearc
                for key, (_, size) in self._versions(client, prefix).items():
                    found[key] = size
            else:
                for page in client.get_paginator("list_objects_v2").paginate(
                        Bucket=self.o.bucket, Prefix=prefix):
                    for obj in page.get("Contents", []):
                        found[obj["Key"]] = int(obj["Size"])
            return {k[len(prefix):]: n for k, n in found.items() if "/" not in k[len(prefix):]}

        return self.call(f"list {folder or '/'}", work)

    def _exists(self, client: Any, name: str) -> bool:
        if self._locked(name):
            return self._first_version(client, name) is not None
        try:
            client.head_object(Bucket=self.o.bucket, Key=self.key(name))
            return True
        except client.exceptions.ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return False
            raise

    def put(self, name: str, data: bytes, *, replace: bool = False) -> Confirmed:
        digest = hashlib.sha256(data).digest()

        def work(client: Any) -> Confirmed:
            if not replace and self._exists(client, name):
                raise DeviceError(f"{self.where}: {name} already exists; nothing was replaced")
            answer = client.put_object(Bucket=self.o.bucket, Key=self.key(name), Body=data,
                                       ChecksumSHA256=_b64(digest), **self._lock_args(name))
            return self._confirm(client, name, answer, len(data))

        return self.call(f"write {name}", work)

    def _confirm(self, client: Any, name: str, answer: dict[str, Any], size: int) -> Confirmed:
        """What the server reports for the object just written: its size and SHA-256."""
        version = answer.get("VersionId")
        if self._locked(name) and version and name not in self._first:
            self._first[name] = (str(version), size)
        head = client.head_object(Bucket=self.o.bucket, Key=self.key(name), ChecksumMode="ENABLED",
                                  **({"VersionId": version} if version else {}))
        reported = answer.get("ChecksumSHA256") or head.get("ChecksumSHA256")
        if reported is None:  # a store that keeps no checksum: read it back
            data = self.read(name) or b""
            return Confirmed(int(head["ContentLength"]), hashlib.sha256(data).digest())
        if self._locked(name) and head.get("ObjectLockMode") is None:
            raise DeviceError(f"{self.where}: {name} was written without its Object Lock "
                              "retention", hint="enable Object Lock on the bucket")
        return Confirmed(int(head["ContentLength"]), base64.b64decode(str(reported).split("-")[0]))

    def upload(self, name: str) -> Upload:
        return _S3Upload(self, name)

    def remove(self, name: str) -> None:
        def work(client: Any) -> None:
            key = self.key(name)
            versions = []
            for page in client.get_paginator("list_object_versions").paginate(
                    Bucket=self.o.bucket, Prefix=key):
                versions += [v["VersionId"] for kind in ("Versions", "DeleteMarkers")
                             for v in page.get(kind, []) if v["Key"] == key]
            for version in versions:  # every version: an erase, not a delete marker
                client.delete_object(Bucket=self.o.bucket, Key=key, VersionId=version)
            self._first.pop(name, None)

        self.call(f"remove {name}", work)


class _S3Upload(Upload):
    """A multipart upload, ``concurrency`` parts in flight, whose failed parts are sent again;
    one PUT below one part."""

    def __init__(self, store: S3Store, name: str) -> None:
        self.store = store
        self.name = name
        self.size = 0
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[Future[dict[str, Any]]] = []
        self._digests: list[bytes] = []
        self._pool: ThreadPoolExecutor | None = None
        self._done = False

        def absent(client: Any) -> None:
            if store._exists(client, name):
                raise DeviceError(f"{store.where}: {name} already exists; nothing was written")

        store.call(f"check {name}", absent)

    def write(self, data: bytes | memoryview) -> None:
        self._buffer += data
        self.size += len(data)
        part = self.store.o.part_size
        while len(self._buffer) >= part:
            self._send(bytes(self._buffer[:part]))
            del self._buffer[:part]

    def _send(self, body: bytes) -> None:
        store, number = self.store, len(self._parts) + 1
        digest = hashlib.sha256(body).digest()
        if self._upload_id is None:
            def start(client: Any) -> str:
                return str(client.create_multipart_upload(
                    Bucket=store.o.bucket, Key=store.key(self.name), ChecksumAlgorithm="SHA256",
                    **store._lock_args(self.name))["UploadId"])

            self._upload_id = store.call(f"start {self.name}", start)
            self._pool = ThreadPoolExecutor(store.o.concurrency, thread_name_prefix="tapearc-s3")

        def send(client: Any) -> dict[str, Any]:
            answer = client.upload_part(Bucket=store.o.bucket, Key=store.key(self.name),
                                        UploadId=self._upload_id, PartNumber=number, Body=body,
                                        ChecksumAlgorithm="SHA256", ChecksumSHA256=_b64(digest))
            return {"PartNumber": number, "ETag": answer["ETag"],
                    "ChecksumSHA256": answer.get("ChecksumSHA256") or _b64(digest)}

        # a part waits for a place: at most ``concurrency`` parts (and their bytes) in flight
        waiting = [f for f in self._parts if not f.done()]
        if len(waiting) >= store.o.concurrency:
            wait(waiting, return_when=FIRST_COMPLETED)
        for done in (f for f in self._parts if f.done()):
            done.result()  # a part that failed for good fails the archive now
        assert self._pool is not None
        self._parts.append(self._pool.submit(store.call, f"part {number} of {self.name}", send))
        self._digests.append(digest)

    def finish(self, sha256: bytes) -> Confirmed:
        store = self.store
        if self._upload_id is None:  # smaller than one part: one PUT
            confirmed = store.put(self.name, bytes(self._buffer))
            self._done = True
            return confirmed
        if self._buffer:
            self._send(bytes(self._buffer))
            self._buffer.clear()
        parts = [f.result() for f in self._parts]
        if self._pool is not None:
            self._pool.shutdown()

        def complete(client: Any) -> Confirmed:
            answer = client.complete_multipart_upload(
                Bucket=store.o.bucket, Key=store.key(self.name), UploadId=self._upload_id,
                MultipartUpload={"Parts": parts})
            composite = hashlib.sha256(b"".join(self._digests)).digest()
            reported = store._confirm(client, self.name, answer, self.size)
            # the server checked every part's SHA-256 as it came; its digest of those digests
            # vouches for the whole, whose SHA-256 is then the caller's
            return Confirmed(reported.size, sha256 if reported.sha256 == composite
                             else reported.sha256)

        confirmed = store.call(f"complete {self.name}", complete)
        self._done = True
        return confirmed

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        upload, self._upload_id = self._upload_id, None
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
        if upload is None:
            return
        store = self.store

        def abort(client: Any) -> None:
            client.abort_multipart_upload(Bucket=store.o.bucket, Key=store.key(self.name),
                                          UploadId=upload)

        with contextlib.suppress(TapearcError):  # a lost link: the bucket's lifecycle rule ends it
            store.call(f"abort {self.name}", abort, retry=False)


class S3Driver(RemoteDriver):
    """``driver = "s3"``."""

    name: ClassVar[str] = "s3"

    @classmethod
    def from_options(cls, drive: str, options: DriveOptions, block_size: int) -> Driver:
        o = expect(options, S3Options)
        return cls(drive, block_size, S3Store(o, drive), capacity=o.capacity, limits=o.limits())
