"""Debian's Orthanc as the tests' PACS: own config, storage in tmp, random high ports.

The configuration follows /work/shared/notes/pacs.md ("Configuration that worked"), with
``MaximumPduLength`` 131072 and ``TCP_NODELAY=1`` in Orthanc's environment (DCMTK only disables
Nagle when asked). It must run in a private network namespace (see ``netns.py``): Orthanc 1.10
always listens on 0.0.0.0.
"""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PACS_AET = "TESTPACS"
USER, PASSWORD = "tapearc", "tapearc-test-pw"


def free_port() -> int:
    """A random high TCP port that is free right now on 127.0.0.1."""
    for _ in range(100):
        port = random.randint(20000, 60000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


@dataclass
class Orthanc:
    """One Orthanc process; ``start()`` waits until its REST API answers."""

    root: Path
    modalities: dict[str, dict[str, Any]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    #: ``StorageCompression``: attachments stored as zlib behind an 8-byte size prefix.
    compression: bool = False
    dicom_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.root / "orthanc.log"

    def config(self) -> dict[str, Any]:
        return {
            "Name": "tapearc-test-pacs",
            "StorageDirectory": str(self.root / "storage"),
            "IndexDirectory": str(self.root / "index"),
            "StorageCompression": self.compression,
            "Plugins": [],
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True,
            "RegisteredUsers": {USER: PASSWORD},
            "OrthancExplorerEnabled": False,
            "WebDavEnabled": False,
            "DicomServerEnabled": True,
            "DicomAet": PACS_AET,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": True,
            "DicomCheckModalityHost": False,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowFind": True,
            "DicomAlwaysAllowGet": True,
            "DicomModalities": self.modalities,
            "UnknownSopClassAccepted": False,
            "StableAge": 5,
            "OverwriteInstances": False,
            "SyncStorageArea": False,
            "MaximumPduLength": 131072,
            "ConcurrentJobs": 2,
            "DicomThreadsCount": 4,
            "SaveJobs": False,
            **self.extra,
        }

    def start(self) -> Orthanc:
        self.root.mkdir(parents=True, exist_ok=True)
        cfg = self.root / "orthanc.json"
        cfg.write_text(json.dumps(self.config(), indent=1))
        env = {**os.environ, "TCP_NODELAY": "1"}
        self.proc = subprocess.Popen(
            ["Orthanc", f"--logfile={self.log_path}", str(cfg)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                self.get("/system")
                return self
            except (OSError, urllib.error.URLError):
                time.sleep(0.05)
        raise RuntimeError(f"Orthanc did not answer in 30 s: {self.log_tail()}")

    def stop(self, *, kill: bool = False) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def log_tail(self, n: int = 5) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def raw(self, method: str, path: str, body: bytes | None = None) -> bytes:
        """The body of a REST answer as it came (``/instances/{id}/file`` is the DICOM file)."""
        auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}{path}",
            data=body,
            method=method,
            headers={"Authorization": f"Basic {auth}"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            data: bytes = resp.read()
        return data

    def request(self, method: str, path: str, body: bytes | None = None) -> Any:
        data = self.raw(method, path, body)
        if not data:
            return None
        try:
            return json.loads(data)
        except ValueError:  # some routes (metadata) answer plain text
            return data.decode()

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def statistics(self) -> dict[str, Any]:
        stats: dict[str, Any] = self.get("/statistics")
        return stats

    def study_instance_count(self, study_uid: str) -> int:
        """Instances Orthanc holds for a study (0 when absent), asked over REST, not DICOM."""
        found = self.request(
            "POST",
            "/tools/find",
            json.dumps({"Level": "Instance", "Query": {"StudyInstanceUID": study_uid}}).encode(),
        )
        return len(found)

    def upload(self, path: Path) -> None:
        """Store one file through REST (to seed the PACS without using tapearc's sender)."""
        self.request("POST", "/instances", path.read_bytes())

    def delete(self, level: str, uid: str) -> None:
        """Delete a study (``level`` "Study", by StudyInstanceUID) or an instance ("Instance",
        by SOPInstanceUID) over REST, as a PACS administrator would."""
        key, route = {"Study": ("StudyInstanceUID", "studies"),
                      "Instance": ("SOPInstanceUID", "instances")}[level]
        ids = self.request("POST", "/tools/find",
                           json.dumps({"Level": level, "Query": {key: uid}}).encode())
        assert len(ids) == 1, f"{level} {uid} not found"
        self.request("DELETE", f"/{route}/{ids[0]}")
