"""Each driver's options: typed, with their defaults, one class per driver.

A driver is built from one of these (``Driver.from_options``), never from a raw table: the
configuration schema (``tapearc.config``) reads ``[drives.NAME]`` tables into them, so a
misspelt key or a bad value stops every command at start, and the drivers know nothing of the
file. Paths arrive absolute (the schema anchors them to the config file's folder), sizes in
bytes. A check that spans fields raises ``ValueError`` whose message starts with the key, so the
schema can name it (``drives.NAME.early_warning must be ...``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, TypeVar

import msgspec

from tapearc.support.units import Size

if TYPE_CHECKING:
    from tapearc.support.limits import Limits

#: A positive number of seconds.
Seconds = Annotated[float, msgspec.Meta(gt=0)]
#: A program name or path, a device node.
Text = Annotated[str, msgspec.Meta(min_length=1)]


class DriveOptions(msgspec.Struct, kw_only=True, frozen=True):
    """What any drive may have besides its driver's options: its place in a tape library and
    the SCSI generic node its TapeAlert page is read from (used by the nightly's drive session)."""

    #: The drive's number in the library (``mtx status``: Data Transfer Element N).
    changer_drive: Annotated[int, msgspec.Meta(ge=0)] | None = None
    #: ``/dev/sgN`` of the drive (``lsscsi -g``): TapeAlert is read before and after a session.
    sg_device: Text | None = None
    #: The sg3-utils program that reads the TapeAlert page.
    sg_logs: Text = "sg_logs"
    #: The slowest the drive streams without stopping (its speed-matching floor, bytes/s, e.g.
    #: "177 MB" for an LTO-9 full-height drive): archives are spread over a pool's drives only
    #: as far as each stream stays above it.
    min_rate: Size | None = None
    #: The drive's native rate (bytes/s, e.g. "400 MB" for LTO-9): the backlog plan's hours.
    max_rate: Size | None = None


class TapeOptions(DriveOptions, frozen=True):
    """``driver = "tape"``: an LTO drive through mt-st and the no-rewind st device."""

    device: Text = "/dev/nst0"
    mt: Text = "mt"
    timeout: Seconds = 900.0
    status_timeout: Seconds = 60.0


class VtapeOptions(DriveOptions, frozen=True):
    """``driver = "vtape"``: cartridges as files in a folder, with st semantics."""

    path: Path = Path("vtapes")
    capacity: Size = Size(1 << 30)
    early_warning: Size | None = None

    def __post_init__(self) -> None:
        if self.capacity <= 0:
            raise ValueError("capacity must be more than 0 bytes")
        if self.early_warning is not None and self.early_warning >= self.capacity:
            raise ValueError("early_warning must be smaller than the capacity (e.g. '16 MiB')")


class DiskOptions(DriveOptions, frozen=True):
    """``driver = "disk"``: a folder of volumes, or (``single``) one volume such as a USB disk."""

    path: Path = Path("volumes")
    single: bool = False
    capacity: Size | None = None
    #: ``path`` must be a mount point; None: true for a single volume (an unplugged USB disk
    #: leaves an empty mount point on the system disk), false for a folder of volumes.
    require_mount: bool | None = None


class OpticalOptions(DriveOptions, frozen=True):
    """``driver = "optical"``: a disc writer, or a folder of disc images (``path``)."""

    device: Text | None = None
    path: Path | None = None
    media: Text = "BD-R"
    capacity: Size | None = None
    margin: Annotated[float, msgspec.Meta(ge=0, lt=0.5)] = 0.01
    session_reserve: Size | None = None
    writer: Literal["xorriso", "cdrecord"] = "xorriso"
    cdrecord: Text | Annotated[list[Text], msgspec.Meta(min_length=1)] = "xorrecord"
    xorriso: Text = "xorriso"
    staging: Path = Path("staging")
    timeout: Seconds = 14400.0
    verify: Literal["direct", "xorriso"] | None = None

    def __post_init__(self) -> None:
        if self.device is not None and self.path is not None:
            raise ValueError("device and path are both set: a drive is either a device or a "
                             "folder of disc images")
        from tapearc.drivers.optical.media import PROFILES, media_profile
        from tapearc.errors import ConfigError

        try:
            media_profile(self.media)
        except ConfigError:
            raise ValueError(f"media {self.media!r} is not a disc type: use one of "
                             f"{', '.join(PROFILES)}") from None


class LtfsOptions(DriveOptions, frozen=True):
    """``driver = "ltfs"``: an LTFS-formatted cartridge mounted as a folder."""

    device: Text = "/dev/sg0"
    mountpoint: Path = Path("/mnt/ltfs")
    tape_device: Text | None = None
    capacity: Size | None = None
    mount_options: list[Text] = msgspec.field(default_factory=list)
    check_mount: bool = True
    mkltfs: Text = "mkltfs"
    ltfs: Text = "ltfs"
    ltfsck: Text = "ltfsck"
    umount: Text = "umount"
    mt: Text = "mt"
    mount_timeout: Seconds = 900.0
    format_timeout: Seconds = 3600.0
    unmount_timeout: Seconds = 3600.0
    check_timeout: Seconds = 14400.0
    eject_timeout: Seconds = 900.0


class RemoteOptions(DriveOptions, frozen=True):
    """What every network store has: a folder of volumes there, a capacity per volume, and how
    hard a lost link is tried again within one archive before the archive is given up."""

    #: Volumes under this folder (sftp) or key prefix (s3), one per barcode.
    prefix: str = "tapearc"
    capacity: Size | None = None
    #: Attempts at one request (connect, a segment, a part) before the archive is given up.
    attempts: Annotated[int, msgspec.Meta(ge=1, le=100)] = 5
    #: Seconds before the first retry, doubling up to ``backoff_max``.
    backoff: Seconds = 2.0
    backoff_max: Seconds = 60.0
    #: What the link may carry, as restore's ``--rate``: ``"5MB/s"`` or ``"unlimited"``...
    rate: Text = "unlimited"
    #: ... and in daily windows, as restore's ``--window``: ``["07:00-19:00=2MB/s"]``.
    windows: list[Text] = msgspec.field(default_factory=list)

    def limits(self) -> Limits:
        """The link's rate limits (checked when the file was read)."""
        from tapearc.support.limits import Limits, parse_setting, parse_window

        return Limits(default=parse_setting(self.rate),
                      windows=tuple(parse_window(w) for w in self.windows))

    def __post_init__(self) -> None:
        from tapearc.errors import UsageError
        from tapearc.support.limits import parse_setting, parse_window

        for key, check, values in (("rate", parse_setting, [self.rate]),
                                   ("windows", parse_window, self.windows)):
            try:
                for value in values:
                    check(value)
            except UsageError as exc:
                raise ValueError(f"{key}: {exc.message} ({exc.hint})") from None
        if not re.fullmatch(r"[A-Za-z0-9._/-]{1,200}", self.prefix) or ".." in self.prefix \
                or self.prefix.startswith("/"):
            raise ValueError("prefix must be a relative path of letters, digits, '.', '_', "
                             "'-' and '/' (no '..')")


class SftpOptions(RemoteOptions, frozen=True, kw_only=True):
    """``driver = "sftp"``: another machine over SSH (OpenSSH's ``ssh`` carries the SFTP
    protocol; paramiko speaks it). The host key is pinned here; authentication by key only."""

    host: Text
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 22
    user: Text
    #: The server's public host key, as in ``known_hosts``: ``ssh-ed25519 AAAA...``.
    host_key: Text
    #: The private key file (0600, no passphrase, or one held by ssh-agent).
    identity: Path
    #: How the server confirms a file's SHA-256: ``sha256sum`` run there over SSH (an account
    #: with a shell; OpenSSL's digest when the server has it, else coreutils'), or ``readback``
    #: (read the file back: an sftp-only account).
    confirm: Literal["sha256sum", "readback"] = "sha256sum"
    ssh: Text = "ssh"
    #: SSH ciphers, best first: AES-GCM runs on the CPU's AES instructions (2-3x chacha20 on
    #: loopback here) and is FIPS-approved.
    ciphers: Text = "aes256-gcm@openssh.com,aes128-gcm@openssh.com,chacha20-poly1305@openssh.com"
    #: Seconds of silence before the link counts as cut (ServerAliveInterval, 3 tries).
    keepalive: Seconds = 15.0
    connect_timeout: Seconds = 30.0

    def __post_init__(self) -> None:
        super().__post_init__()
        parts = self.host_key.split()
        if len(parts) < 2 or not parts[0].startswith(("ssh-", "ecdsa-", "sk-")):
            raise ValueError("host_key must be the server's public key as in known_hosts "
                             "('ssh-ed25519 AAAA...': ssh-keyscan -t ed25519 HOST)")


class S3Options(RemoteOptions, frozen=True, kw_only=True):
    """``driver = "s3"``: S3-compatible object storage through boto3. Credentials come from
    ``credentials`` (a file) or the environment (``AWS_ACCESS_KEY_ID``...), never the config."""

    bucket: Text
    endpoint: Text | None = None
    region: Text = "us-east-1"
    #: An AWS shared-credentials file (``[default]`` with the two keys), 0600.
    credentials: Path | None = None
    profile: Text = "default"
    #: Object Lock on every object written: ``compliance`` (nobody can shorten it),
    #: ``governance``, or none (a bucket without Object Lock).
    object_lock: Literal["compliance", "governance"] | None = None
    retention_days: Annotated[int, msgspec.Meta(ge=1, le=36500)] = 3650
    #: Multipart part size: also what a cut link costs to send again.
    part_size: Size = Size(16 << 20)
    #: Parts in flight at once (a long link needs several to be kept full).
    concurrency: Annotated[int, msgspec.Meta(ge=1, le=32)] = 4
    addressing: Literal["path", "virtual"] = "path"
    #: Verify the server's TLS certificate against this CA bundle (default: the system's).
    ca_bundle: Path | None = None
    connect_timeout: Seconds = 30.0
    read_timeout: Seconds = 120.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 5 << 20 <= self.part_size <= 5 << 30:
            raise ValueError("part_size must be from 5 MiB to 5 GiB (S3's limits)")


_O = TypeVar("_O", bound=DriveOptions)


def expect(options: DriveOptions, kind: type[_O]) -> _O:
    """``options`` as the driver's own options class (``TypeError`` for another driver's)."""
    if not isinstance(options, kind):
        raise TypeError(f"{type(options).__name__} given where {kind.__name__} is needed")
    return options
