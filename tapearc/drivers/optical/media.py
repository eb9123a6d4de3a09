"""Optical media profiles: how much a kind of disc holds and what each session costs."""

from __future__ import annotations

from dataclasses import dataclass

from tapearc.errors import ConfigError

SECTOR = 2048
MIB = 1 << 20


@dataclass(frozen=True)
class MediaProfile:
    """One kind of disc: user-data sectors, write-once or not, space lost per session."""

    name: str
    sectors: int
    worm: bool
    session_reserve: int

    @property
    def nominal_bytes(self) -> int:
        """The disc's user-data size."""
        return self.sectors * SECTOR


# Sector counts from notes/optical.md §5 (DVD and BD-R SL/QL checked against the sources cited
# there; the smaller of the -R/+R figures). Session reserves are estimates, not measurements:
# xorriso pads every session by 300 KiB and writes a new tree; CD and DVD sessions also cost a
# lead-in/lead-out (about 13.5 MB for a CD's first session).
PROFILES: dict[str, MediaProfile] = {
    p.name: p
    for p in (
        MediaProfile("CD-R", 359_800, True, 16 * MIB),
        MediaProfile("CD-RW", 359_800, False, 16 * MIB),
        MediaProfile("DVD-R", 2_295_104, True, 8 * MIB),
        MediaProfile("DVD+R", 2_295_104, True, 8 * MIB),
        MediaProfile("DVD+R DL", 4_171_712, True, 8 * MIB),
        MediaProfile("DVD-R DL", 4_171_712, True, 8 * MIB),
        MediaProfile("DVD+RW", 2_295_104, False, 4 * MIB),
        MediaProfile("DVD-RW", 2_295_104, False, 8 * MIB),
        MediaProfile("DVD-RAM", 2_295_104, False, 4 * MIB),
        MediaProfile("BD-R", 12_219_392, True, 4 * MIB),
        MediaProfile("BD-R DL", 24_438_784, True, 4 * MIB),
        MediaProfile("BD-R TL", 48_878_592, True, 4 * MIB),
        MediaProfile("BD-R QL", 62_500_864, True, 4 * MIB),
        MediaProfile("BD-RE", 12_219_392, False, 4 * MIB),
        MediaProfile("BD-RE DL", 24_438_784, False, 4 * MIB),
    )
}
_ALIASES = {
    "CD": "CD-R", "CD 700": "CD-R", "CD-R 700": "CD-R",
    "DVD": "DVD+R", "DVD 4.7": "DVD+R", "DVD 8.5": "DVD+R DL", "DVD DL": "DVD+R DL",
    "BD-R 25": "BD-R", "BD-R 50": "BD-R DL", "BD-R 100": "BD-R TL", "BD-R 128": "BD-R QL",
    "BD-RE 25": "BD-RE", "BD-RE 50": "BD-RE DL", "BDXL": "BD-R TL",
}


def media_profile(name: str) -> MediaProfile:
    """The profile called ``name`` (case and spacing ignored); ``ConfigError`` if unknown."""
    key = " ".join(name.upper().replace("_", " ").split())
    key = _ALIASES.get(key, key)
    try:
        return PROFILES[key]
    except KeyError:
        known = ", ".join(list(PROFILES) + list(_ALIASES))
        raise ConfigError(f"unknown optical media {name!r}", hint=f"use one of: {known}") from None
