"""Debian's Orthanc as the tests' PACS: own config, storage in tmp, random high ports.

The configuration follows /work/shared/notes/pacs.md ("Configuration that worked"), with
``MaximumPduLength`` 131072 and ``TCP_NODELAY=1`` in Orthanc's environment (DCMTK only disables
Nagle when asked). It must run in a private network namespace (see ``netns.py``): Orthanc 1.10
always listens on 0.0.0.0.

``dicomweb=True`` loads Debian's orthanc-dicomweb plugin (``/dicom-web/``); ``https=(cert, key)``
turns on Orthanc's own HTTPS. Debian 12's Orthanc serves HTTPS through libcivetweb 1.15, which
dlopens ``libssl.so`` and looks up ``SSL_get_peer_certificate``: OpenSSL 3 has no such symbol
(it became a macro for ``SSL_get1_peer_certificate``), the pointer stays NULL and Orthanc dies
with SIGSEGV on the first HTTPS connection (seen here: ``civetweb-worker`` jumps to 0x0). So
``civetweb_ssl_shim`` compiles a two-line ``libssl.so`` that defines the old name and links the
real libssl (gcc and libssl-dev, in ./dev's SYSTEM_PACKAGES), and Orthanc runs with it first on
``LD_LIBRARY_PATH``.
"""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PACS_AET = "TESTPACS"
USER, PASSWORD = "tapearc", "tapearc-test-pw"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
_SHIM_C = b"""/* OpenSSL 3 has no SSL_get_peer_certificate symbol; civetweb 1.15 looks it up. */
#include <openssl/ssl.h>
#undef SSL_get_peer_certificate
X509 *SSL_get_peer_certificate(const SSL *s) { return SSL_get1_peer_certificate(s); }
"""


def civetweb_ssl_shim() -> Path:
    """A folder holding ``libssl.so`` (the shim) and ``libcrypto.so`` for LD_LIBRARY_PATH; built
    once per machine user in the temporary folder."""
    folder = Path(tempfile.gettempdir()) / f"tapearc-civetweb-shim-{os.getuid()}"
    lib = folder / "libssl.so"
    if lib.exists():
        return folder
    folder.mkdir(exist_ok=True)
    src = folder / "shim.c"
    src.write_bytes(_SHIM_C)
    tmp = folder / f"libssl.so.{os.getpid()}"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(tmp), str(src), "-l:libssl.so.3",
                    "-Wl,--no-as-needed"], check=True, capture_output=True)
    crypto = folder / "libcrypto.so"
    if not crypto.exists():
        real = next(p for d in ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/usr/lib64",
                                "/usr/lib") if (p := Path(d) / "libcrypto.so.3").exists())
        crypto.symlink_to(real)
    tmp.replace(lib)
    return folder


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
    dicomweb: bool = False
    #: (certificate, key) PEM files: Orthanc serves HTTPS with them.
    https: tuple[Path, Path] | None = None
    #: The CA the test's own REST calls trust (with ``https``).
    ca: Path | None = None
    dicom_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.root / "orthanc.log"

    @property
    def base_url(self) -> str:
        """Orthanc's REST root."""
        scheme = "https" if self.https else "http"
        return f"{scheme}://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        """The DICOMweb root (with ``dicomweb=True``)."""
        return f"{self.base_url}/dicom-web"

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
            **self._web_config(),
            **self.extra,
        }

    def _web_config(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.dicomweb:
            out["Plugins"] = [str(DICOMWEB_PLUGIN)]
            out["DicomWeb"] = {"Enable": True, "Root": "/dicom-web/", "EnableWado": False}
        if self.https:
            pem = self.root / "https.pem"  # civetweb wants the key and the chain in one file
            out["SslEnabled"] = True
            out["SslCertificate"] = str(pem)
        return out

    def start(self) -> Orthanc:
        self.root.mkdir(parents=True, exist_ok=True)
        cfg = self.root / "orthanc.json"
        cfg.write_text(json.dumps(self.config(), indent=1))
        env = {**os.environ, "TCP_NODELAY": "1"}
        if self.https:
            cert, key = self.https
            (self.root / "https.pem").write_bytes(key.read_bytes() + cert.read_bytes())
            shim = str(civetweb_ssl_shim())
            env["LD_LIBRARY_PATH"] = ":".join(filter(None, [shim, env.get("LD_LIBRARY_PATH")]))
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
            f"{self.base_url}{path}",
            data=body,
            method=method,
            headers={"Authorization": f"Basic {auth}"},
        )
        context = ssl.create_default_context(cafile=str(self.ca)) if self.ca else None
        with urllib.request.urlopen(req, timeout=30, context=context) as resp:
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
