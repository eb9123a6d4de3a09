"""Optical discs (BD-R, DVD±R, CD-R and their rewritable kin) written one session per archive.

A disc holds the same files as a disk volume (``tapearc.drivers.disk``), in an ISO 9660 tree
with Rock Ridge and Joliet names, so any computer can read it:

    label.json        session 1 (``tapearc cartridge label``); volume id ``TAPEARC_<barcode>``
    000001.data       session 2: archive 1's data stream, block i at byte i * block_size
    000001.index      session 2: ``layout.IndexHeader`` then the index blob
    000002.data ...   session 3, ...

An archive is one session: its blocks are staged in a local file, and ``commit`` burns data and
index together, then reads both back from the disc and compares their SHA-256 with what was
staged. Only then does ``commit`` return, so the write job counts the copy only once it is
known to be on the disc. A burn that fails half-way leaves no new directory tree: the files of
an archive appear together or not at all.

Two ways to burn (``writer``):

* ``"xorriso"`` (default): xorriso's native multi-session mode (``-dev DEV -map ... -commit``),
  for BD-R/BD-RE, DVD±R/RW and CD.
* ``"cdrecord"``: a cdrecord-compatible program (``cdrecord = "xorrecord"``, ``"cdrskin"``,
  ``["xorriso", "-as", "cdrecord"]`` or ``"wodim"`` for CD/DVD). The session image is built by
  ``xorriso -as mkisofs -C <msinfo> -M DEV`` and burnt with ``-multi -data``. On overwriteable
  media (BD-RE, DVD+RW, ``stdio:`` files) ``--grow_overwriteable_iso`` is passed: without it
  xorrecord silently overwrites from LBA 0 (notes/optical.md §1.4). wodim cannot write BD.

Exit codes of these programs are not trusted (cdrskin ignores unknown options and exits 0;
xorriso exits 5 for most failures): every run's ``FATAL``/``FAILURE``/``SORRY`` lines are parsed
(``problems``) and mapped to typed errors, and every burn is read back.

Capacity: a media profile (``PROFILES``: CD 700 MB ... BD-R 128 GB) less a safety margin, capped
by what the drive says (``-tell_media_space``) and by ``capacity`` when set (a small emulated
disc), less a per-session reserve (padding, directory tree, lead-in/out on CD/DVD). The space
is checked while staging and again before burning. A closed (complete) disc has no room.

Config (``[drives.NAME]``, ``driver = "optical"``):

``device``            the drive, e.g. ``"/dev/sr0"`` (default)
``path``              instead of a drive: a folder of disc images, one ``<barcode>.iso`` per
                      disc, each a ``stdio:`` pseudo-drive (tests, dry runs)
``media``             profile: ``"BD-R"`` (default), ``"BD-R DL"``, ``"BD-R TL"``, ``"BD-R QL"``,
                      ``"BD-RE"``, ``"DVD+R"``, ``"DVD-R"``, ``"DVD+R DL"``, ``"DVD+RW"``,
                      ``"CD-R"``, ``"CD-RW"``; sizes as aliases (``"BD-R 25"`` ... ``"CD 700"``)
``capacity``          cap the disc size (e.g. ``"2 MiB"`` to emulate a small disc)
``margin``            fraction of the nominal size kept free (default 0.01)
``session_reserve``   bytes kept free per session (default: the profile's)
``writer``            ``"xorriso"`` or ``"cdrecord"``; ``cdrecord`` the program (string or list)
``xorriso``           path of xorriso (also used to read discs)
``staging``           folder for the session being built (default ``staging`` under the site)
``timeout``           seconds a burn may take (default 14400)
``verify``            read-back after each burn: ``"xorriso"`` (MD5 through the drive; the
                      default for a real drive) or ``"direct"`` (SHA-256 of the sectors; the
                      default for disc images)

Modules: ``media`` (profiles), ``parse`` (what the programs print), ``commands`` (the burns and
the MD5 read-back), ``disc`` (one look at a disc, direct sector reads), ``sink`` (an archive being
staged), ``driver`` (the driver contract).
"""

from tapearc.drivers.optical.driver import OpticalDriver
from tapearc.drivers.optical.media import PROFILES, SECTOR, MediaProfile, media_profile
from tapearc.drivers.optical.parse import (
    Extent,
    MediaInfo,
    check_run,
    parse_lba_report,
    parse_toc,
    problems,
)

__all__ = [
    "PROFILES",
    "SECTOR",
    "Extent",
    "MediaInfo",
    "MediaProfile",
    "OpticalDriver",
    "check_run",
    "media_profile",
    "parse_lba_report",
    "parse_toc",
    "problems",
]
