"""Configuration: one TOML file, one declarative schema, checked at start by every command.

Where the file is found: ``--config FILE``, then ``$TAPEARC_CONFIG``, then
``/etc/tapearc/tapearc.toml``. The schema is ``Document`` and the tables below it (msgspec
structs): every table forbids unknown keys, so a misspelt key stops the command instead of
being ignored. Two parts are declared by their owners and composed here: each driver's keys
(``tapearc.drivers.options``) and the ``[rotation]`` rules (``tapearc.rotation.policy``).

This module adds what belongs to the file: paths relative to its folder, sizes written as
``'1 MiB'``, the checks across tables (a pool's drive exists, no two pools share a vault), the
key files named in ``[keys]``, and one error (``ConfigError``, exit 78) naming the dotted key:
``tapearc.toml: drives.lto1.devcie is not a known key ([drives.lto1] takes: ...)``.
"""

from __future__ import annotations

import re
import tomllib
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import msgspec

from tapearc.drivers.options import (
    DiskOptions,
    DriveOptions,
    LtfsOptions,
    OpticalOptions,
    S3Options,
    SftpOptions,
    TapeOptions,
    VtapeOptions,
)
from tapearc.errors import ConfigError
from tapearc.rotation.policy import Policy, Rotation, make_policy
from tapearc.support.units import Size, parse_size

if TYPE_CHECKING:
    from tapearc.dicomnet.address import PacsAddress
    from tapearc.dicomnet.peer import TlsOptions

DEFAULT_CONFIG = Path("/etc/tapearc/tapearc.toml")
Text = Annotated[str, msgspec.Meta(min_length=1)]

# --- the schema ---------------------------------------------------------------------------------


class _Table(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A TOML table: unknown keys are errors."""


class SiteTable(_Table, frozen=True):
    """``[site]``."""

    #: Short site code written on every cartridge label.
    name: str
    catalog: Path = Path("catalog.sqlite")
    #: The run lock: one writing run at a time.
    lock: Path = Path("tapearc.lock")

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,32}", self.name):
            raise ValueError(f"name {self.name!r} must be 1-32 letters, digits, '.', '_' or '-': "
                             "it is written on every cartridge label (a short site code, no "
                             "patient data)")


class IngestTable(_Table, frozen=True):
    """``[ingest]``: the PACS storage folders."""

    sources: list[Path] = msgspec.field(default_factory=list)
    #: Files younger than this are left for the next run (the PACS may still be writing them).
    quiet_seconds: Annotated[float, msgspec.Meta(ge=0)] = 300.0
    #: fnmatch patterns of files under the sources that are not the PACS's data (never read,
    #: archived or reported): a name (``*.tmp``, ``DICOMDIR``) or a path below the source.
    exclude: list[Annotated[str, msgspec.Meta(min_length=1)]] = msgspec.field(
        default_factory=list)


class KeysTable(_Table, frozen=True):
    """``[keys]``: public keys every archive is encrypted to, private keys that read them, the
    signing key of the writing host and the signers readers trust."""

    directory: Path = Path("keys")
    recipients: list[Path] = msgspec.field(default_factory=list)
    identities: list[Path] = msgspec.field(default_factory=list)
    #: The site signing key (Ed25519): the writing host signs every stream with it.
    signing_key: Path | None = None
    #: Signing public keys whose archives readers accept; anything else is refused (65).
    trusted_signers: list[Path] = msgspec.field(default_factory=list)
    #: Break-glass: also read streams written before signing, reported UNSIGNED.
    accept_unsigned: bool = False


class ArchiveTable(_Table, frozen=True):
    """``[archive]``: how archives are cut and paced."""

    #: One tape block = one encrypted chunk.
    block_size: Size = Size(1 << 20)
    #: Cap on the PACS read rate in bytes/s (0: none).
    read_rate: Size = Size(0)
    #: Memory between the encrypting stream and the drives (shared by every drive the stream
    #: goes to; one such buffer per stream written in parallel).
    buffer: Size = Size(64 << 20)
    max_archive_bytes: Size = Size(64 << 30)
    #: Read, hash and encrypt each archive once and write it to every pool's drive at the same
    #: time; false: one pool after the other, each reading the PACS again.
    one_pass: bool = True

    def __post_init__(self) -> None:
        b = self.block_size
        if b & (b - 1) or not (1 << 16) <= b <= (1 << 23):
            raise ValueError("block_size must be a power of two from 64 KiB to 8 MiB (the default "
                             "1 MiB suits LTO drives)")


class VerifyTable(_Table, frozen=True):
    """``[verify]``: read-back after each nightly write."""

    after_write: Literal["all", "sample", "none"] = "sample"
    sample: Annotated[int, msgspec.Meta(ge=0)] = 2


class ChangerTable(_Table, frozen=True):
    """``[changer]``: a tape library's robot, driven through mtx."""

    device: Text
    mtx: Text = "mtx"


class PoolTable(_Table, frozen=True):
    """``[pools.NAME]``: a copy pool, written by its drive (or drives) and kept in its own
    vault."""

    drive: Text | None = None
    #: Several drives (a library, or two standalone drives): archives are spread over them.
    drives: list[Text] = msgspec.field(default_factory=list)
    vault: Text | None = None  # default: vault-NAME
    media: Text = "LTO"

    def __post_init__(self) -> None:
        if (self.drive is None) == (not self.drives):
            raise ValueError("drive or drives must be given, not both: drive = \"lto1\", or "
                             "drives = [\"lto1\", \"lto3\"] for several")
        if len(set(self.drives)) != len(self.drives):
            raise ValueError("drives lists a drive twice")


class BacklogTable(_Table, frozen=True):
    """``[backlog]``: the first load of an existing PACS (``tapearc backlog``)."""

    #: Which studies go first: the newest (most likely to be recalled) or the oldest.
    order: Literal["newest", "oldest"] = "newest"


class ReceiverTable(_Table, frozen=True):
    """``[receiver]``: the C-STORE receiver a PACS routes studies to (``tapearc receive``)."""

    staging: Path | None = None
    aet: Annotated[str, msgspec.Meta(min_length=1, max_length=16)] = "TAPEARC"
    #: The address it listens on: the one the PACS routes to (loopback by default).
    bind: Text = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 11112
    #: ``AET@ADDRESS`` or ``AET@NETWORK/PREFIX`` of each PACS that may send; nothing else is
    #: accepted.
    allow: list[Text] = msgspec.field(default_factory=list)
    max_object_size: Size = Size(4 << 30)
    max_associations: Annotated[int, msgspec.Meta(ge=1)] = 4


class RecallTable(_Table, frozen=True):
    """``[recall]``: how recalled images are written."""

    #: A group (e.g. a viewing station's account) that may read recalled files (0640, folders
    #: 0750); without one they are 0600 in 0700 folders.
    group: Text | None = None

    def __post_init__(self) -> None:
        if self.group is not None:
            import grp

            try:
                grp.getgrnam(self.group)
            except KeyError:
                raise ValueError(f"group {self.group!r} does not exist on this host") from None


class PacsTable(_Table, frozen=True):
    """``[pacs]``: the PACS the archive is reconciled with (``tapearc reconcile``, the nightly);
    with ``staging``, also the network source that fetches from it what the archive lacks. It
    is reached by DIMSE (``address = "AET@HOST:PORT"``) or by DICOMweb (``address =
    "https://host/dicom-web"``: QIDO-RS, WADO-RS, with ``auth`` credentials)."""

    #: ``AET@HOST:PORT`` of the PACS, or its DICOMweb base URL.
    address: Text
    #: Our own AE title (DIMSE).
    aet: Annotated[str, msgspec.Meta(min_length=1, max_length=16)] = "TAPEARC"
    tls: bool = False
    #: CA bundle trusted besides the system's (DIMSE TLS and HTTPS).
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: Check the PACS's certificate (off only by explicit choice).
    tls_verify: bool = True
    #: DICOMweb credentials: an Authorization header of this kind, its secret read at each run
    #: from ``auth_file`` (a file only this user may read: the token, or ``user:password``)
    #: or from the environment variable named by ``auth_env``. Never the secret itself here.
    auth: Literal["bearer", "basic"] | None = None
    auth_file: Path | None = None
    auth_env: Text | None = None
    #: Where fetched instances land (the nightly ingests it); None: report, do not fetch.
    staging: Path | None = None
    #: How the DIMSE source retrieves (DICOMweb always uses WADO-RS).
    method: Literal["get", "move"] = "get"
    #: Port of the temporary C-MOVE receiver (the PACS must know it for ``aet``).
    move_port: Annotated[int, msgspec.Meta(ge=1, le=65535)] | None = None
    move_host: Text = "0.0.0.0"

    def __post_init__(self) -> None:
        from tapearc.dicomnet.dicomweb import is_web_address, parse_web_peer
        from tapearc.dicomnet.peer import check_aet, parse_peer
        from tapearc.errors import UsageError

        web = is_web_address(self.address)
        try:
            parse_web_peer(self.address) if web else parse_peer(self.address)
        except UsageError as exc:
            raise ValueError(f"address {self.address!r} is neither AET@HOST:PORT (e.g. "
                             "ORTHANC@pacs.example.org:104) nor a DICOMweb URL (e.g. "
                             f"https://pacs.example.org/dicom-web): {exc.message}") from None
        try:
            check_aet(self.aet)
        except UsageError:
            raise ValueError(f"aet {self.aet!r} is not an AE title") from None
        if self.method == "move" and self.move_port is None:
            raise ValueError("move_port is missing: C-MOVE needs the port the PACS sends to")
        if web and self.method == "move":
            raise ValueError("method = \"move\" is DIMSE: a DICOMweb PACS is read by WADO-RS")
        if not web and (self.auth or self.auth_file or self.auth_env):
            raise ValueError("auth, auth_file and auth_env are for a DICOMweb address")
        if self.auth is None and (self.auth_file or self.auth_env):
            raise ValueError("auth_file or auth_env is set without auth (\"bearer\" or "
                             "\"basic\")")
        if self.auth is not None and (self.auth_file is None) == (self.auth_env is None):
            raise ValueError("auth needs exactly one of auth_file and auth_env")

    def tls_options(self) -> TlsOptions | None:
        """The TLS settings; None: plain TCP (DIMSE without ``tls``, ``tls_ca`` or
        ``tls_cert``). For DICOMweb the URL's scheme decides and these always apply."""
        from tapearc.dicomnet.dicomweb import is_web_address
        from tapearc.dicomnet.peer import TlsOptions

        if not (self.tls or self.tls_ca or self.tls_cert or is_web_address(self.address)):
            return None
        return TlsOptions(ca_file=self.tls_ca, cert_file=self.tls_cert,
                          key_file=self.tls_key or self.tls_cert, verify=self.tls_verify)

    def peer(self) -> PacsAddress:
        """The PACS with its TLS options and, for DICOMweb, its credentials (read now, so a
        changed token file or variable is used from the next run)."""
        from tapearc.dicomnet.address import parse_pacs
        from tapearc.dicomnet.dicomweb import load_credentials

        credentials = load_credentials(self.auth, file=self.auth_file, env=self.auth_env)
        return parse_pacs(self.address, tls=self.tls_options(), credentials=credentials)


Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
WEEKDAYS: tuple[str, ...] = get_args(Weekday)


class ReconcileTable(_Table, frozen=True):
    """``[reconcile]``: the nightly's reconcile with ``[pacs]`` (docs/OPERATIONS.md)."""

    #: Studies dated in the last this many days are checked by identity every night.
    lookback_days: Annotated[int, msgspec.Meta(ge=0)] = 7
    #: The day the nightly checks every study by identity (also when none ran for a week).
    full_weekday: Weekday = "sunday"
AeTitle = Annotated[str, msgspec.Meta(min_length=1, max_length=16)]
Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]


class ServePeerTable(_Table, frozen=True):
    """``[serve.peers.NAME]``: a DICOM node that may query and retrieve."""

    aet: AeTitle
    #: The host name or IP address it calls from (and is sent to), or a network
    #: (``10.1.2.0/24``) for nodes that only query.
    address: Text
    #: Where it receives C-STORE: needed to be a C-MOVE destination, and for queued requests.
    port: Port | None = None

    def __post_init__(self) -> None:
        _check_aet(self.aet)


def _check_aet(aet: str) -> None:
    """PS3.5 "AE": printable ASCII without backslash, not only spaces."""
    if not aet.strip() or any(not " " <= ch <= "~" or ch == "\\" for ch in aet):
        raise ValueError(f"aet {aet!r} is not an AE title (1-16 printable ASCII characters, "
                         "no backslash)")


class ServeTlsTable(_Table, frozen=True):
    """``[serve.tls]``: DICOM TLS on every association of the recall desk."""

    cert: Path
    key: Path
    #: The CA of the peers' certificates (required unless verify is false).
    ca: Path | None = None
    verify: bool = True


class ServeTable(_Table, frozen=True):
    """``[serve]``: the DICOM query/retrieve SCP over the catalog (``tapearc serve``)."""

    aet: AeTitle = "TAPEARC"
    bind: Text = "127.0.0.1"
    port: Port = 11113
    peers: dict[str, ServePeerTable] = msgspec.field(default_factory=dict)
    tls: ServeTlsTable | None = None
    max_associations: Annotated[int, msgspec.Meta(ge=1, le=64)] = 8
    #: A query matching more than this is refused (Out of Resources) rather than cut short.
    max_matches: Annotated[int, msgspec.Meta(ge=1)] = 10000
    #: How often the drives and the library are asked what they hold (for availability).
    refresh_seconds: Annotated[float, msgspec.Meta(ge=1)] = 60.0
    #: Run for every finished recall request, with TAPEARC_REQUEST_* in its environment.
    hook: list[Text] = msgspec.field(default_factory=list)
    hook_timeout: Annotated[float, msgspec.Meta(gt=0)] = 60.0

    def __post_init__(self) -> None:
        _check_aet(self.aet)
        if self.tls is not None and self.tls.verify and self.tls.ca is None:
            raise ValueError("tls: a recall desk that checks certificates needs ca, the CA of "
                             "its peers (or verify = false)")


class StreamTable(_Table, frozen=True):
    """``[stream]``: ``tapearc stream`` ships what arrives to the network pools in small
    archives, between nightly runs; the nightly leaves those pools to it."""

    #: The pools it ships to (default: every pool whose drive is a network store).
    pools: list[Text] | None = None
    #: An archive leaves once this much waits...
    max_bytes: Size = Size(256 << 20)
    #: ... or once the oldest waiting instance is this old.
    max_age_minutes: Annotated[float, msgspec.Meta(gt=0)] = 15.0
    #: Seconds between two looks at the sources and the receiver's staging folder.
    interval: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    #: Seconds before a failed shipment is tried again, doubling up to ``backoff_max``.
    backoff: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    backoff_max: Annotated[float, msgspec.Meta(gt=0)] = 900.0

    def __post_init__(self) -> None:
        if self.max_bytes < 1 << 20:
            raise ValueError("max_bytes must be at least 1 MiB")


class RotationTable(Rotation, frozen=True, forbid_unknown_fields=True):
    """``[rotation]``: the offsite policy (docs/OPERATIONS.md)."""


# ``[drives.NAME]``: one table per driver, told apart by ``driver = "..."``; the keys are the
# driver's options (tapearc.drivers.options), with the library and TapeAlert keys every drive has.


class TapeTable(TapeOptions, frozen=True, tag="tape", tag_field="driver", forbid_unknown_fields=True):
    """``driver = "tape"``."""


class VtapeTable(VtapeOptions, frozen=True, tag="vtape", tag_field="driver",
                 forbid_unknown_fields=True):
    """``driver = "vtape"``."""


class DiskTable(DiskOptions, frozen=True, tag="disk", tag_field="driver", forbid_unknown_fields=True):
    """``driver = "disk"``."""


class OpticalTable(OpticalOptions, frozen=True, tag="optical", tag_field="driver",
                   forbid_unknown_fields=True):
    """``driver = "optical"``."""


class LtfsTable(LtfsOptions, frozen=True, tag="ltfs", tag_field="driver", forbid_unknown_fields=True):
    """``driver = "ltfs"``."""


class SftpTable(SftpOptions, frozen=True, kw_only=True, tag="sftp", tag_field="driver",
                forbid_unknown_fields=True):
    """``driver = "sftp"``."""


class S3Table(S3Options, frozen=True, kw_only=True, tag="s3", tag_field="driver",
              forbid_unknown_fields=True):
    """``driver = "s3"``."""


DriveTable = TapeTable | VtapeTable | DiskTable | OpticalTable | LtfsTable | SftpTable | S3Table


class Document(_Table, frozen=True):
    """The whole file."""

    site: SiteTable
    ingest: IngestTable = msgspec.field(default_factory=IngestTable)
    keys: KeysTable = msgspec.field(default_factory=KeysTable)
    archive: ArchiveTable = msgspec.field(default_factory=ArchiveTable)
    verify: VerifyTable = msgspec.field(default_factory=VerifyTable)
    changer: ChangerTable | None = None
    rotation: RotationTable = msgspec.field(default_factory=RotationTable)
    receiver: ReceiverTable = msgspec.field(default_factory=ReceiverTable)
    recall: RecallTable = msgspec.field(default_factory=RecallTable)
    pacs: PacsTable | None = None
    reconcile: ReconcileTable = msgspec.field(default_factory=ReconcileTable)
    stream: StreamTable | None = None
    backlog: BacklogTable = msgspec.field(default_factory=BacklogTable)
    serve: ServeTable = msgspec.field(default_factory=ServeTable)
    pools: dict[str, PoolTable] = msgspec.field(default_factory=dict)
    drives: dict[str, DriveTable] = msgspec.field(default_factory=dict)


# --- what the rest of tapearc reads -------------------------------------------------------------


@dataclass(frozen=True)
class DriveConfig:
    """One ``[drives.NAME]`` table: the driver name and its typed options."""

    name: str
    driver: str
    options: DriveOptions


@dataclass(frozen=True)
class PoolConfig:
    """One ``[pools.NAME]`` table: the copy pool's drives, its vault and media type. ``drive``
    is the first of ``drives``: the one recall, verify and the catalog copy use."""

    name: str
    drive: str
    vault: str
    media: str
    drives: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.drives:
            object.__setattr__(self, "drives", (self.drive,))


@dataclass
class Settings:
    """The validated configuration, paths absolute."""

    path: Path | None
    base_dir: Path
    site: str
    catalog_path: Path
    lock_path: Path
    sources: list[Path]
    quiet_seconds: float
    keys_dir: Path
    recipient_files: list[Path]
    identity_files: list[Path]
    block_size: int
    read_rate: int
    buffer_bytes: int
    max_archive_bytes: int
    one_pass: bool
    verify_mode: str
    verify_sample: int
    pools: dict[str, PoolConfig]
    drives: dict[str, DriveConfig]
    changer: ChangerTable | None
    rotation: Policy
    receiver: ReceiverTable = field(default_factory=ReceiverTable)
    recall_group: str | None = None
    pacs: PacsTable | None = None
    reconcile: ReconcileTable = field(default_factory=ReconcileTable)
    #: ``ingest.exclude`` (see ``IngestTable``).
    exclude: list[str] = field(default_factory=list)
    stream: StreamTable | None = None
    backlog_order: str = "newest"
    serve: ServeTable = field(default_factory=ServeTable)
    signing_key_file: Path | None = None
    trusted_signer_files: list[Path] = field(default_factory=list)
    accept_unsigned: bool = False

    @property
    def private_dir(self) -> Path:
        """The site's own 0700 folder for temporary plaintext, beside the catalog (never /tmp)."""
        return self.catalog_path.parent / "private"


def find_config(explicit: Path | None) -> Path:
    """The config file to use: the explicit one, else the system default."""
    if explicit is not None:
        return explicit
    return DEFAULT_CONFIG


def load_settings(explicit: Path | None, *, check_keys: bool = True) -> Settings:
    """Read and validate the config file (``ConfigError``, exit 78, on any problem); with
    ``check_keys``, also the key files it names (key management commands skip that: they are
    how the files come to exist)."""
    path = find_config(explicit)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"no configuration at {path}",
            hint="run 'tapearc init DIR' or pass --config FILE / set TAPEARC_CONFIG",
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    settings = parse_settings(doc, path)
    if check_keys:
        check_key_files(settings)
    return settings


def parse_settings(doc: Mapping[str, Any], path: Path | None) -> Settings:
    """Validate a parsed TOML document; ``path`` anchors relative paths (cwd if None)."""
    base = (path.parent if path else Path.cwd()).resolve()
    where = str(path) if path else "configuration"
    d = _anchor(_convert(doc, Document, where), base)
    drives = {name: DriveConfig(name, _driver_name(table), table) for name, table in d.drives.items()}
    pools = {}
    for name, pool in d.pools.items():
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,16}", name):
            raise ConfigError(f"{where}: pools.{name} has an invalid name",
                              hint="use a short name such as A or B")
        names = tuple(pool.drives) or (str(pool.drive),)
        key = "drives" if pool.drives else "drive"
        for drive in names:
            if drive not in drives:
                raise ConfigError(
                    f"{where}: pools.{name}.{key} names {drive!r}, which is not a configured drive",
                    hint=f"use one of: {', '.join(sorted(drives)) or 'none configured'}")
        pools[name] = PoolConfig(name, names[0], pool.vault or f"vault-{name}", pool.media, names)
    for name in (d.stream.pools or []) if d.stream else []:
        if name not in pools:
            raise ConfigError(f"{where}: stream.pools names {name!r}, which is not a pool",
                              hint=f"use one of: {', '.join(sorted(pools)) or 'none configured'}")
    return Settings(
        path=path,
        base_dir=base,
        site=d.site.name,
        catalog_path=d.site.catalog,
        lock_path=d.site.lock,
        sources=d.ingest.sources,
        quiet_seconds=d.ingest.quiet_seconds,
        exclude=d.ingest.exclude,
        keys_dir=d.keys.directory,
        recipient_files=d.keys.recipients,
        identity_files=d.keys.identities,
        block_size=d.archive.block_size,
        read_rate=d.archive.read_rate,
        buffer_bytes=d.archive.buffer,
        max_archive_bytes=d.archive.max_archive_bytes,
        one_pass=d.archive.one_pass,
        verify_mode=d.verify.after_write,
        verify_sample=d.verify.sample,
        pools=pools,
        drives=drives,
        changer=d.changer,
        rotation=make_policy(d.rotation, {p: c.vault for p, c in pools.items()}, where),
        receiver=d.receiver,
        recall_group=d.recall.group,
        pacs=d.pacs,
        reconcile=d.reconcile,
        stream=d.stream,
        backlog_order=d.backlog.order,
        serve=d.serve,
        signing_key_file=d.keys.signing_key,
        trusted_signer_files=d.keys.trusted_signers,
        accept_unsigned=d.keys.accept_unsigned,
    )


def drive_config(name: str, table: Mapping[str, Any], base_dir: Path,
                 where: str = "configuration") -> DriveConfig:
    """Validate one ``[drives.NAME]`` table on its own (paths relative to ``base_dir``)."""
    options = _anchor(_convert(table, DriveTable, where, ("drives", name)), base_dir)
    return DriveConfig(name, _driver_name(options), options)


def check_key_files(settings: Settings) -> None:
    """Every ``keys.recipients`` file holds a public key, every ``keys.trusted_signers`` file a
    signing public key, and every ``keys.identities`` file and the ``keys.signing_key`` exist
    (opening one needs its passphrase: that is checked when it is used)."""
    from tapearc.format.keys import load_recipient, load_trusted_signers

    where = str(settings.path) if settings.path else "configuration"
    fix = "fix the path, or create the key with 'tapearc keys generate'"
    for path in settings.recipient_files:
        if not path.is_file():
            raise ConfigError(f"{where}: keys.recipients names {path}, which does not exist", hint=fix)
        try:
            load_recipient(path)
        except ConfigError as exc:
            raise ConfigError(f"{where}: keys.recipients: {exc.message}", hint=exc.hint) from None
    for path in settings.trusted_signer_files:
        if not path.is_file():
            raise ConfigError(f"{where}: keys.trusted_signers names {path}, which does not exist",
                              hint=fix)
        try:
            load_trusted_signers([path])
        except ConfigError as exc:
            raise ConfigError(f"{where}: keys.trusted_signers: {exc.message}", hint=exc.hint) from None
    for key, paths in (("keys.identities", settings.identity_files),
                       ("keys.signing_key", [settings.signing_key_file] if settings.signing_key_file
                        else [])):
        for path in paths:
            if not path.is_file():
                escrow = ("; after a disaster, give the escrow key instead: --identity "
                          "/path/to/escrow.key (catalog rebuild, restore)"
                          if key == "keys.identities" else "")
                raise ConfigError(f"{where}: {key} names {path}, which does not exist",
                                  hint=fix + escrow)


# --- reading the document -----------------------------------------------------------------------

_T = TypeVar("_T")


def _decode(kind: type, value: Any) -> Any:
    """msgspec's hook for the types TOML has no literal for (errors are named by msgspec)."""
    if kind is Size:
        return parse_size(value)
    if kind is Path:
        if isinstance(value, str) and value:
            return Path(value).expanduser()
        raise ValueError(f"{value!r} is not a path")
    raise NotImplementedError(kind)


def _anchor(value: _T, base: Path) -> _T:
    """``value`` with every relative path in it made absolute against ``base``."""
    out: Any = value
    if isinstance(value, Path):
        out = (base / value).resolve()
    elif isinstance(value, list):
        out = [_anchor(v, base) for v in value]
    elif isinstance(value, dict):
        out = {k: _anchor(v, base) for k, v in value.items()}
    elif isinstance(value, msgspec.Struct):
        out = msgspec.structs.replace(
            value, **{f: _anchor(getattr(value, f), base) for f in value.__struct_fields__})
    return out  # type: ignore[no-any-return]


def _driver_name(options: DriveOptions) -> str:
    tag = options.__struct_config__.tag
    assert isinstance(tag, str)
    return tag


def _convert(value: Any, kind: Any, where: str, key: tuple[str, ...] = ()) -> Any:
    try:
        return msgspec.convert(value, kind, dec_hook=_decode)
    except msgspec.ValidationError as exc:
        raise _explain(str(exc), value, kind, where, key) from None


_STEP = re.compile(r"\.(\w+)|\[(\d+|\.\.\.)\]")


def _explain(text: str, raw: Any, kind: Any, where: str, prefix: tuple[str, ...]) -> ConfigError:
    """msgspec's ``Expected `int`, got `str` - at `$.drives[...].timeout``` as a ConfigError that
    names the dotted key (``drives.lto1.timeout``)."""
    message, _, at = text.partition(" - at `")
    keys, node = list(prefix), raw
    for name, index in _STEP.findall(at.rstrip("`")[1:]):
        if index == "...":  # msgspec does not say which entry of a table of tables: find it
            entry_kind = _entry_kind(kind)
            for entry, sub in node.items():
                try:
                    msgspec.convert(sub, entry_kind, dec_hook=_decode)
                except msgspec.ValidationError as exc:
                    return _explain(str(exc), sub, entry_kind, where, (*keys, str(entry)))
        if index:
            keys[-1] += f"[{index}]"
            kind = next((get_args(m)[0] for m in _members(kind) if get_origin(m) in (list, frozenset)),
                        Any)
        else:
            keys.append(name)
            kind = _field_kind(kind, node, name)
            node = node.get(name) if isinstance(node, Mapping) else None
    table = ".".join(keys)
    struct = _struct_kind(kind, node)
    fields = struct.__struct_fields__ if struct else ()
    if m := re.fullmatch(r"Object contains unknown field `(.*)`", message):
        if not keys:
            return ConfigError(f"{where}: [{m[1]}] is not a tapearc table",
                               hint=f"known: {', '.join(fields)}")
        return ConfigError(f"{where}: {table}.{m[1]} is not a known key",
                           hint=f"[{table}] takes: {', '.join(_public(struct))}")
    if m := re.fullmatch(r"Object missing required field `(.*)`", message):
        return ConfigError(f"{where}: {'.'.join([*keys, m[1]])} is missing")
    if message.split(" ", 1)[0] in fields:  # a check across keys names its key first
        return ConfigError(f"{where}: {table}.{message}")
    choices = [str(a) for m in _members(kind) if get_origin(m) is Literal for a in get_args(m)]
    if keys and keys[-1] == "driver":
        choices = _driver_tags()
    return ConfigError(f"{where}: {table or 'the file'}: {message}",
                       hint=f"use one of: {', '.join(choices)}" if choices else None)


def _field_kind(kind: Any, node: Any, name: str) -> Any:
    struct = _struct_kind(kind, node)
    if struct is not None:
        for field in msgspec.structs.fields(struct):
            if field.name == name:
                return field.type
    return _entry_kind(kind)


def _entry_kind(kind: Any) -> Any:
    """The type of the entries of a table of tables (``dict[str, PoolTable]`` -> PoolTable)."""
    return next((get_args(m)[1] for m in _members(kind) if get_origin(m) is dict), Any)


def _members(kind: Any) -> list[Any]:
    """The types a type annotation allows (``Annotated`` and unions unwrapped)."""
    if get_origin(kind) is Annotated:
        return _members(get_args(kind)[0])
    if get_origin(kind) in (Union, types.UnionType):
        return [m for arg in get_args(kind) for m in _members(arg)]
    return [kind]


def _struct_kind(kind: Any, node: Any) -> type[msgspec.Struct] | None:
    """The struct type ``kind`` stands for at ``node`` (a union of tables: the one tagged so)."""
    structs = [m for m in _members(kind) if isinstance(m, type) and issubclass(m, msgspec.Struct)]
    tag = node.get("driver") if isinstance(node, Mapping) else None
    for struct in structs:
        if len(structs) == 1 or struct.__struct_config__.tag == tag:
            return struct
    return None


def _public(struct: type[msgspec.Struct] | None) -> list[str]:
    names = list(struct.__struct_fields__) if struct else []
    tag_field = struct.__struct_config__.tag_field if struct else None
    return [tag_field, *names] if tag_field else names


def _driver_tags() -> list[str]:
    return [str(t.__struct_config__.tag) for t in get_args(DriveTable)]
