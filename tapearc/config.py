"""Configuration: one TOML file, validated at start, paths relative to the file.

Where the file is found: ``--config FILE``, then ``$TAPEARC_CONFIG``, then
``/etc/tapearc/tapearc.toml``. Every problem raises ``ConfigError`` (exit 78) naming the key and
the fix. Sections owned by other modules (``[rotation]``, ``[network]``, ...) are kept in
``Settings.raw`` and validated by those modules through ``Settings.section``.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tapearc.errors import ConfigError

DEFAULT_CONFIG = Path("/etc/tapearc/tapearc.toml")
VERIFY_MODES = ("all", "sample", "none")

_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "kib": 1024,
    "m": 1000**2, "mb": 1000**2, "mib": 1024**2,
    "g": 1000**3, "gb": 1000**3, "gib": 1024**3,
    "t": 1000**4, "tb": 1000**4, "tib": 1024**4,
}


@dataclass(frozen=True)
class DriveConfig:
    """One ``[drives.NAME]`` table: the driver name and its own options."""

    name: str
    driver: str
    options: dict[str, Any]


@dataclass(frozen=True)
class PoolConfig:
    """One ``[pools.NAME]`` table: the copy pool's drive, its vault and media type."""

    name: str
    drive: str
    vault: str
    media: str


@dataclass
class Settings:
    """The validated configuration."""

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
    verify_mode: str
    verify_sample: int
    pools: dict[str, PoolConfig]
    drives: dict[str, DriveConfig]
    raw: dict[str, Any] = field(default_factory=dict)

    def section(self, name: str) -> dict[str, Any]:
        """The raw table ``[name]`` (empty if absent) for a module that validates its own keys."""
        value = self.raw.get(name, {})
        if not isinstance(value, dict):
            raise ConfigError(f"{self._where()}: [{name}] must be a table")
        return value

    @property
    def private_dir(self) -> Path:
        """The site's own 0700 folder for temporary plaintext, beside the catalog (never /tmp)."""
        return self.catalog_path.parent / "private"

    def resolve(self, value: str | Path) -> Path:
        """A path from the config, relative to the config file's folder."""
        return (self.base_dir / Path(value).expanduser()).resolve()

    def _where(self) -> str:
        return str(self.path) if self.path else "configuration"


def find_config(explicit: Path | None) -> Path:
    """The config file to use: the explicit one, else the system default."""
    if explicit is not None:
        return explicit
    return DEFAULT_CONFIG


def load_settings(explicit: Path | None) -> Settings:
    """Read and validate the config file (``ConfigError``, exit 78, on any problem)."""
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
    return parse_settings(doc, path)


#: Every key tapearc reads, per table; a misspelt key is an error, never silently ignored
#: (``[drives.*]`` keys are checked by each driver, ``[rotation]`` by the rotation policy).
KNOWN_KEYS: dict[str, tuple[str, ...]] = {
    "site": ("name", "catalog", "lock"),
    "ingest": ("sources", "quiet_seconds"),
    "keys": ("directory", "recipients", "identities"),
    "archive": ("block_size", "read_rate", "buffer", "max_archive_bytes"),
    "verify": ("after_write", "sample"),
    "changer": ("device", "mtx"),
    "pools": (),
    "drives": (),
    "rotation": (),
}


def _check_known(doc: dict[str, Any], where: str) -> None:
    for table, value in doc.items():
        if table not in KNOWN_KEYS:
            raise ConfigError(f"{where}: [{table}] is not a tapearc table",
                              hint=f"known: {', '.join(sorted(KNOWN_KEYS))}")
        keys = KNOWN_KEYS[table]
        if not keys:
            continue
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: [{table}] must be a table")
        for key in value:
            if key not in keys:
                raise ConfigError(f"{where}: {table}.{key} is not a known key",
                                  hint=f"[{table}] takes: {', '.join(keys)}")


def parse_settings(doc: dict[str, Any], path: Path | None) -> Settings:
    """Validate a parsed TOML document; ``path`` anchors relative paths (cwd if None)."""
    base = (path.parent if path else Path.cwd()).resolve()
    where = str(path) if path else "configuration"
    _check_known(doc, where)
    v = _Validator(doc, where, base)
    site = v.string("site.name", required=True)
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,32}", site):
        raise ConfigError(
            f"{where}: site.name {site!r} must be 1-32 letters, digits, '.', '_' or '-'",
            hint="it is written on every cartridge label: use a short site code, no patient data",
        )
    drives = v.drives()
    pools = v.pools(drives)
    verify_mode = v.string("verify.after_write", default="sample")
    if verify_mode not in VERIFY_MODES:
        raise ConfigError(f"{where}: verify.after_write must be one of {', '.join(VERIFY_MODES)}")
    block_size = v.size("archive.block_size", default=1 << 20)
    if block_size & (block_size - 1) or not (1 << 16) <= block_size <= (1 << 23):
        raise ConfigError(
            f"{where}: archive.block_size must be a power of two from 64 KiB to 8 MiB",
            hint="the default 1 MiB suits LTO drives",
        )
    settings = Settings(
        path=path,
        base_dir=base,
        site=site,
        catalog_path=v.path("site.catalog", default="catalog.sqlite"),
        lock_path=v.path("site.lock", default="tapearc.lock"),
        sources=v.path_list("ingest.sources"),
        quiet_seconds=v.number("ingest.quiet_seconds", default=300.0),
        keys_dir=v.path("keys.directory", default="keys"),
        recipient_files=v.path_list("keys.recipients"),
        identity_files=v.path_list("keys.identities"),
        block_size=block_size,
        read_rate=v.size("archive.read_rate", default=0),
        buffer_bytes=v.size("archive.buffer", default=64 << 20),
        max_archive_bytes=v.size("archive.max_archive_bytes", default=64 << 30),
        verify_mode=verify_mode,
        verify_sample=int(v.number("verify.sample", default=2)),
        pools=pools,
        drives=drives,
        raw=doc,
    )
    # the rotation policy is checked here too, so a bad [rotation] table stops every command
    from tapearc.rotation.policy import parse_policy

    parse_policy(settings.section("rotation"), {p: c.vault for p, c in pools.items()}, where)
    return settings


def parse_size(value: object, key: str = "size") -> int:
    """'1 MiB' -> 1048576; plain integers are bytes."""
    if isinstance(value, bool):
        raise ConfigError(f"{key} must be a size such as '1 MiB'")
    if isinstance(value, int):
        if value < 0:
            raise ConfigError(f"{key} must not be negative")
        return value
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", value)
        if m and m.group(2).lower() in _SIZE_UNITS:
            return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])
    raise ConfigError(f"{key} = {value!r} is not a size", hint="write e.g. 1048576, '1 MiB', '2 GB'")


class _Validator:
    """Typed access to dotted keys of the TOML document, with errors naming the key."""

    def __init__(self, doc: dict[str, Any], where: str, base: Path) -> None:
        self.doc = doc
        self.where = where
        self.base = base

    def get(self, key: str) -> Any:
        node: Any = self.doc
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node

    def fail(self, key: str, problem: str, hint: str | None = None) -> ConfigError:
        return ConfigError(f"{self.where}: {key} {problem}", hint=hint)

    def string(self, key: str, *, default: str | None = None, required: bool = False) -> str:
        value = self.get(key)
        if value is None:
            if required or default is None:
                raise self.fail(key, "is missing", hint=f"add {key} to the config")
            return default
        if not isinstance(value, str) or not value:
            raise self.fail(key, "must be a non-empty string")
        return value

    def number(self, key: str, *, default: float) -> float:
        value = self.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise self.fail(key, "must be a non-negative number")
        return float(value)

    def size(self, key: str, *, default: int) -> int:
        value = self.get(key)
        if value is None:
            return default
        try:
            return parse_size(value, key)
        except ConfigError as exc:
            raise self.fail(key, f"= {value!r} is not a size", hint="e.g. '1 MiB'") from exc

    def path(self, key: str, *, default: str) -> Path:
        value = self.get(key)
        if value is None:
            value = default
        if not isinstance(value, str) or not value:
            raise self.fail(key, "must be a path string")
        return (self.base / Path(value).expanduser()).resolve()

    def path_list(self, key: str) -> list[Path]:
        value = self.get(key)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(x, str) and x for x in value):
            raise self.fail(key, "must be a list of path strings")
        return [(self.base / Path(x).expanduser()).resolve() for x in value]

    def drives(self) -> dict[str, DriveConfig]:
        table = self.get("drives") or {}
        if not isinstance(table, dict):
            raise self.fail("drives", "must be a table of [drives.NAME] tables")
        out: dict[str, DriveConfig] = {}
        for name, options in table.items():
            if not isinstance(options, dict):
                raise self.fail(f"drives.{name}", "must be a table")
            driver = options.get("driver")
            if not isinstance(driver, str) or not driver:
                raise self.fail(
                    f"drives.{name}.driver", "is missing", hint="e.g. driver = \"tape\""
                )
            out[name] = DriveConfig(name, driver, {k: v for k, v in options.items() if k != "driver"})
        return out

    def pools(self, drives: dict[str, DriveConfig]) -> dict[str, PoolConfig]:
        table = self.get("pools") or {}
        if not isinstance(table, dict):
            raise self.fail("pools", "must be a table of [pools.NAME] tables")
        out: dict[str, PoolConfig] = {}
        for name, options in table.items():
            key = f"pools.{name}"
            if not re.fullmatch(r"[A-Za-z0-9_-]{1,16}", name):
                raise self.fail(key, "has an invalid name", hint="use a short name such as A or B")
            if not isinstance(options, dict):
                raise self.fail(key, "must be a table")
            drive = options.get("drive")
            if not isinstance(drive, str) or drive not in drives:
                raise self.fail(
                    f"{key}.drive",
                    f"= {drive!r} is not a configured drive",
                    hint=f"use one of: {', '.join(sorted(drives)) or 'none configured'}",
                )
            vault = options.get("vault", f"vault-{name}")
            media = options.get("media", "LTO")
            if not isinstance(vault, str) or not isinstance(media, str):
                raise self.fail(key, "vault and media must be strings")
            out[name] = PoolConfig(name, drive, vault, media)
        return out
