"""``driver = "sftp"``: volumes on another machine, over SSH.

OpenSSH's own ``ssh`` carries the connection (``ssh -s HOST sftp``: its ciphers, its key
authentication, its keep-alives) and paramiko's ``SFTPClient`` speaks the SFTP protocol over
that pipe. The server's host key is pinned by the configuration (a known_hosts file of that one
key, nothing else trusted); authentication is by the configured private key only, never a
password or an agent's other keys. The key's path is in the config file; its content never is.

Writes are pipelined (many requests in flight, answers taken as they come) at explicit offsets,
so a connection that drops mid-archive is resumed: the store connects again (with backoff) and
sends again exactly the writes the server had not acknowledged, into the same temporary file.
A finished file is fsynced (``fsync@openssh.com``), renamed to its name (a plain SFTP rename,
which never replaces an existing file), and its SHA-256 is computed on the server
(``sha256sum`` run over SSH) or read back (``confirm = "readback"``, for sftp-only accounts).

The data path uses paramiko's request layer (``_async_request``/``_read_response``) the way
paramiko's own prefetch does; its file object's pipelined writes drop late error answers.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import select
import shlex
import subprocess
import tempfile
import uuid
from collections import deque
from collections.abc import Callable
from typing import IO, Any, ClassVar, TypeVar

from tapearc.drivers.base import Driver
from tapearc.drivers.options import DriveOptions, SftpOptions, expect
from tapearc.drivers.remote.driver import RemoteDriver
from tapearc.drivers.remote.store import Confirmed, RemoteStore, RetryPolicy, Upload
from tapearc.errors import DeviceError, DeviceUnavailable, TapearcError, ToolMissing

log = logging.getLogger(__name__)

T = TypeVar("T")
#: Bytes per SFTP write or read request (every server takes 32 KiB; OpenSSH takes 255 KiB).
REQUEST = 64 << 10
#: Requests in flight before the oldest answer is waited for.
WINDOW = 64
#: Objects at most this big are confirmed by reading them back (an index, a label).
SMALL = 1 << 20
_PINNED = "tapearc-pinned"
_F_SETPIPE_SZ = 1031


class _Pipe:
    """The socket paramiko's SFTP client talks through: the pipes of ``ssh -s HOST sftp``."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        self.proc = proc
        self._in, self._out = proc.stdin.fileno(), proc.stdout.fileno()
        for fd in (self._in, self._out):  # fewer wake-ups per MiB
            with contextlib.suppress(OSError):
                fcntl.fcntl(fd, _F_SETPIPE_SZ, 1 << 20)

    def send(self, data: bytes) -> int:
        try:
            return os.write(self._in, data)
        except OSError as exc:
            raise EOFError(f"ssh closed the connection ({exc.strerror})") from None

    def recv(self, n: int) -> bytes:
        return os.read(self._out, n)

    def get_name(self) -> str:
        return "ssh"

    def recv_ready(self) -> bool:
        return bool(select.select([self._out], [], [], 0)[0])

    def close(self) -> None:
        proc = self.proc
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class _Requests:
    """Requests in flight on one session; paramiko hands answers to other requests here (as
    to its own prefetching file), so they may come in any order."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._answers: dict[int, tuple[int, Any]] = {}

    def send(self, kind: int, *args: Any) -> int:
        return int(self.client._async_request(self, kind, *args))

    def _async_response(self, kind: int, msg: Any, num: int) -> None:
        self._answers[num] = (kind, msg)

    def wait(self, num: int) -> tuple[int, Any]:
        """The answer to request ``num``; an error status raises (``IOError``, ``EOFError``)."""
        if num in self._answers:
            from paramiko.sftp import CMD_STATUS

            kind, msg = self._answers.pop(num)
            if kind == CMD_STATUS:
                self.client._convert_status(msg)
            return kind, msg
        kind, msg = self.client._read_response(num)
        return int(kind), msg


class SftpStore(RemoteStore):
    """Files under ``prefix`` in the SFTP login's home folder on one host."""

    def __init__(self, options: SftpOptions, drive: str) -> None:
        self.o = options
        self.drive = drive
        self.where = f"{options.user}@{options.host}:{options.prefix}"
        self.policy = RetryPolicy(options.attempts, options.backoff, options.backoff_max)
        self._pipe: _Pipe | None = None
        self._client: Any = None
        self._stderr: IO[bytes] | None = None
        self._known: str | None = None
        self._dirs: set[str] = set()

    # --- the connection ----------------------------------------------------------------------

    def _ssh(self, *remote: str) -> list[str]:
        """``ssh`` with the pinned host key and the configured key only."""
        o = self.o
        if self._known is None:
            fd, self._known = tempfile.mkstemp(prefix="tapearc-known-")
            with os.fdopen(fd, "w") as fh:
                fh.write(f"{_PINNED} {o.host_key}\n")
        options = {
            "BatchMode": "yes", "StrictHostKeyChecking": "yes", "HostKeyAlias": _PINNED,
            "UserKnownHostsFile": self._known, "GlobalKnownHostsFile": "/dev/null",
            "UpdateHostKeys": "no", "IdentitiesOnly": "yes", "IdentityAgent": "none",
            "PasswordAuthentication": "no", "KbdInteractiveAuthentication": "no",
            "ServerAliveInterval": str(max(1, round(o.keepalive))), "ServerAliveCountMax": "3",
            "ConnectTimeout": str(max(1, round(o.connect_timeout))), "ControlMaster": "no",
            "ControlPath": "none", "ForwardAgent": "no", "ClearAllForwardings": "yes",
            "LogLevel": "ERROR", "Ciphers": o.ciphers,
        }
        argv = [o.ssh, "-F", "/dev/null", "-i", str(o.identity), "-p", str(o.port), "-l", o.user]
        for key, value in options.items():
            argv += ["-o", f"{key}={value}"]
        return [*argv, *remote]

    def client(self) -> Any:
        """The SFTP session, connected now if it is not."""
        if self._client is not None:
            return self._client
        from paramiko import SFTPClient

        from tapearc.support.process import resolve

        try:
            program = resolve(self.o.ssh)
        except ToolMissing as exc:
            raise ToolMissing(str(exc.message), hint="install openssh-client") from None
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the connection
        argv = self._ssh("-s", "--", self.o.host, "sftp")
        proc = subprocess.Popen([program, *argv[1:]], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=self._stderr, start_new_session=True)
        self._pipe = _Pipe(proc)
        try:
            self._client = SFTPClient(self._pipe)
        except Exception as exc:
            self.close()
            raise self._unavailable(exc) from None
        return self._client

    def _ssh_said(self) -> str:
        if self._stderr is None:
            return ""
        with contextlib.suppress(OSError, ValueError):
            self._stderr.seek(0)
            lines = self._stderr.read().decode(errors="replace").strip().splitlines()
            return lines[-1] if lines else ""
        return ""

    def _unavailable(self, exc: BaseException) -> TapearcError:
        said = self._ssh_said() or str(exc) or type(exc).__name__
        if "host key" in said.lower() or "REMOTE HOST IDENTIFICATION" in said:
            return DeviceUnavailable(
                f"{self.where}: the server's host key is not the pinned one ({said})",
                hint=f"if the server was really re-keyed, set drives.{self.drive}.host_key "
                     "to its new key (ssh-keyscan), after checking it out of band")
        return DeviceUnavailable(f"{self.where}: cannot connect ({said})",
                                 hint="check the network, the server and the key")

    def close(self) -> None:
        pipe, self._pipe, self._client = self._pipe, None, None
        self._dirs.clear()
        if pipe is not None:
            pipe.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()
            if self._known:
                os.unlink(self._known)

    def call(self, what: str, work: Callable[[Any], T], *, retry: bool = True) -> T:
        """``work(client)`` with the link's failures retried (connecting again each time); an
        error the server answered (``OSError``: permission, no space) becomes ``DeviceError``."""

        def once() -> T:
            try:
                return work(self.client())
            except (TapearcError, OSError):
                raise
            except Exception as exc:  # EOF, paramiko's SSHException: the session broke
                raise DeviceError(f"{self.where}: {what}: connection lost "
                                  f"({self._ssh_said() or exc or type(exc).__name__})") from None

        try:
            if not retry:
                return once()
            return self.policy.run(once, f"{self.where}: {what}", self.close)
        except OSError as exc:
            raise DeviceError(f"{self.where}: {what}: {exc.strerror or exc}") from None

    def path(self, name: str) -> str:
        return f"{self.o.prefix}/{name}" if name else self.o.prefix

    def ensure_dir(self, client: Any, folder: str) -> None:
        """Make ``folder`` (relative to the prefix) and its parents, as needed."""
        if folder in self._dirs:
            return
        parts = self.path(folder).split("/")
        for i in range(1, len(parts) + 1):
            path = "/".join(parts[:i])
            try:
                client.mkdir(path, 0o700)
            except OSError:
                client.stat(path)  # exists (or the real error is raised here)
        self._dirs.add(folder)

    # --- the store ---------------------------------------------------------------------------

    def read(self, name: str, offset: int = 0, length: int | None = None) -> bytes | None:
        def work(client: Any) -> bytes | None:
            try:
                fh = client.open(self.path(name), "rb")
            except FileNotFoundError:
                return None
            with fh:
                n = length if length is not None else max(0, fh.stat().st_size - offset)
                return _read_range(client, fh.handle, offset, n)

        data = self.call(f"read {name}", work)
        if data is not None:
            self.bytes_read += len(data)
        return data

    def names(self, folder: str) -> dict[str, int]:
        def work(client: Any) -> dict[str, int]:
            try:
                return {a.filename: int(a.st_size or 0) for a in client.listdir_attr(self.path(folder))}
            except FileNotFoundError:
                return {}

        return self.call(f"list {folder or '/'}", work)

    def put(self, name: str, data: bytes, *, replace: bool = False) -> Confirmed:
        upload = _SftpUpload(self, name, replace=replace)
        try:
            upload.write(data)
            return upload.finish(hashlib.sha256(data).digest())
        except BaseException:
            upload.abort()
            raise

    def upload(self, name: str) -> Upload:
        return _SftpUpload(self, name)

    def remove(self, name: str) -> None:
        def work(client: Any) -> None:
            with contextlib.suppress(FileNotFoundError):
                client.remove(self.path(name))

        self.call(f"remove {name}", work)

    def sha256(self, name: str, size: int) -> bytes:
        """The SHA-256 of ``name`` as the server holds it."""
        if self.o.confirm == "readback" or size <= SMALL:
            data = self.read(name)
            return hashlib.sha256(data or b"").digest()
        from tapearc.support.process import run_tool

        # the shell starts in the login's home, the SFTP session maybe elsewhere: name it whole
        absolute = self.call(f"locate {name}", lambda client: str(client.normalize(self.path(name))))
        path = shlex.quote(absolute)
        # OpenSSL's digest uses the CPU's SHA instructions (coreutils' does not: 3-5x slower)
        argv = self._ssh("--", self.o.host, f"if command -v openssl >/dev/null; then openssl dgst "
                         f"-sha256 -r {path}; else sha256sum -- {path}; fi")
        done = run_tool(argv, timeout=max(600.0, size / 20e6), check=False)
        try:
            if done.returncode:
                raise ValueError(done.stderr.strip().splitlines()[-1] if done.stderr.strip()
                                 else f"exit code {done.returncode}")
            return bytes.fromhex(done.stdout.split()[0])
        except (IndexError, ValueError) as exc:
            raise DeviceError(f"{self.where}: the server did not checksum {name} ({exc})",
                              hint=f"give the account a shell with sha256sum, or set "
                                   f"drives.{self.drive}.confirm = \"readback\"") from None


def _read_range(client: Any, handle: bytes, offset: int, length: int) -> bytes:
    """``length`` bytes at ``offset`` of an open file (fewer at its end), many requests in
    flight."""
    from paramiko.sftp import CMD_READ
    from paramiko.sftp_client import int64

    reqs = _Requests(client)
    out = bytearray()
    pending: deque[tuple[int, int]] = deque()
    pos, end = offset, offset + length
    while pos < end or pending:
        while pos < end and len(pending) < WINDOW:
            n = min(REQUEST, end - pos)
            pending.append((reqs.send(CMD_READ, handle, int64(pos), n), n))
            pos += n
        num, n = pending.popleft()
        try:
            data = reqs.wait(num)[1].get_string()
        except EOFError:
            data = b""
        out += data
        if len(data) < n:  # end of file, or a server that answers short: ask again from here
            for later, _ in pending:
                with contextlib.suppress(EOFError, OSError):
                    reqs.wait(later)
            pending.clear()
            if not data:
                break
            pos = offset + len(out)
    return bytes(out)


class _SftpUpload(Upload):
    """One file written under a temporary name, resumed across lost connections."""

    def __init__(self, store: SftpStore, name: str, *, replace: bool = False) -> None:
        self.store = store
        self.name = name
        self.replace = replace
        folder, _, base = name.rpartition("/")
        self.folder = folder
        self.tmp = store.path(f"{folder}/.{base}.{uuid.uuid4().hex[:12]}.tmp" if folder
                              else f".{base}.{uuid.uuid4().hex[:12]}.tmp")
        self.final = store.path(name)
        self.offset = 0
        self._unacked: deque[tuple[int, int, bytes]] = deque()
        self._handle: bytes | None = None
        self._reqs: _Requests | None = None
        self._created = False
        self._closed = False
        self._done = False
        store.call(f"create {name}", self._open)

    def _open(self, client: Any) -> None:
        """Open the temporary file (again, after a lost link) and resend what was not answered."""
        from paramiko.sftp import CMD_OPEN, SFTP_FLAG_CREATE, SFTP_FLAG_EXCL, SFTP_FLAG_WRITE
        from paramiko.sftp_attr import SFTPAttributes

        if self._handle is not None and self._reqs is not None and self._reqs.client is client:
            return
        self.store.ensure_dir(client, self.folder)
        again = self._created
        flags = SFTP_FLAG_WRITE | SFTP_FLAG_CREATE | (0 if again else SFTP_FLAG_EXCL)
        attrs = SFTPAttributes()
        attrs.st_mode = 0o600
        _, msg = client._request(CMD_OPEN, self.tmp, flags, attrs)
        self._handle, self._created = msg.get_binary(), True
        self._reqs = _Requests(client)
        resend = list(self._unacked)
        self._unacked.clear()
        for _, offset, data in resend:
            self._send(offset, data)
        if again:
            log.info("%s: resumed %s at byte %d, %d bytes sent again", self.store.where,
                     self.name, self.offset, sum(len(d) for _, _, d in resend))

    def _send(self, offset: int, data: bytes) -> None:
        from paramiko.sftp import CMD_WRITE
        from paramiko.sftp_client import int64

        assert self._reqs is not None
        num = self._reqs.send(CMD_WRITE, self._handle, int64(offset), data)
        self._unacked.append((num, offset, data))
        pipe = self.store._pipe
        while self._unacked and (len(self._unacked) > WINDOW
                                 or (pipe is not None and pipe.recv_ready())):
            self._reap()

    def _reap(self) -> None:
        assert self._reqs is not None
        self._reqs.wait(self._unacked[0][0])
        self._unacked.popleft()

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        for at in range(0, len(view), REQUEST):
            chunk = bytes(view[at:at + REQUEST])
            offset = self.offset
            self.offset += len(chunk)

            def send(client: Any, offset: int = offset, chunk: bytes = chunk) -> None:
                self._open(client)
                if not any(o == offset for _, o, _ in self._unacked):
                    self._send(offset, chunk)

            self.store.call(f"write {self.name}", send)

    def finish(self, sha256: bytes) -> Confirmed:
        from paramiko.sftp import CMD_CLOSE, CMD_EXTENDED

        def flush(client: Any) -> None:
            if self._handle is None and self._created and not self._unacked and self._closed:
                return  # closed by an attempt whose answer was lost with the link
            self._open(client)
            while self._unacked:
                self._reap()
            try:
                client._request(CMD_EXTENDED, "fsync@openssh.com", self._handle)
            except OSError as exc:  # a server without the extension: its close still writes
                log.debug("%s: no fsync (%s)", self.store.where, exc)
            client._request(CMD_CLOSE, self._handle)
            self._handle, self._closed = None, True

        def rename(client: Any) -> int:
            try:
                if self.replace:
                    client.posix_rename(self.tmp, self.final)
                else:
                    client.rename(self.tmp, self.final)  # SFTP rename never replaces a file
            except OSError:
                # done by an attempt whose answer was lost with the link?
                with contextlib.suppress(FileNotFoundError):
                    client.stat(self.tmp)
                    raise
            return int(client.stat(self.final).st_size)

        self.store.call(f"finish {self.name}", flush)
        size = self.store.call(f"rename {self.name}", rename)
        self._done = True
        if size != self.offset:
            return Confirmed(size, b"")
        return Confirmed(size, self.store.sha256(self.name, size))

    def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self._unacked.clear()

        def remove(client: Any) -> None:
            with contextlib.suppress(FileNotFoundError):
                client.remove(self.tmp)

        with contextlib.suppress(TapearcError):  # a lost link: the file stays, named as ours
            self.store.call(f"remove {self.tmp}", remove, retry=False)


class SftpDriver(RemoteDriver):
    """``driver = "sftp"``."""

    name: ClassVar[str] = "sftp"
    requires: ClassVar[tuple[str, ...]] = ("ssh",)

    @classmethod
    def from_options(cls, drive: str, options: DriveOptions, block_size: int) -> Driver:
        o = expect(options, SftpOptions)
        if not o.identity.is_file():
            raise DeviceUnavailable(f"drives.{drive}.identity: {o.identity} does not exist",
                                    hint="create the key (ssh-keygen -t ed25519) and authorise it "
                                         "on the server")
        return cls(drive, block_size, SftpStore(o, drive), capacity=o.capacity, limits=o.limits())

