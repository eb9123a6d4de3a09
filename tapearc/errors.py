"""Every error tapearc reports to a user, each with its exit code (borg style).

A ``TapearcError`` carries a one-line message that names the problem and, where there is one,
the fix. The command-line handler (``tapearc.cli``) prints ``error: <message>`` on stderr and
exits with ``exit_code``; no traceback unless ``--debug``. Library code raises these, never
``SystemExit``.

Exit codes (the contract in docs and scripts):

====  ==============================================================================
0     done
1     failed (an error with no more specific code)
2     usage error (bad arguments)
3     done, with warnings: something the PACS holds could not be archived, sent or confirmed
65    data integrity failure: authentication tag, checksum, MAC, tampered or damaged medium
69    a required tool or device is unavailable (says what to install)
75    operator action needed or temporary: no, wrong or full cartridge; locked by another run
78    bad configuration
====  ==============================================================================
"""

from __future__ import annotations

from collections.abc import Sequence

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_WARNINGS = 3
EXIT_DATAERR = 65
EXIT_UNAVAILABLE = 69
EXIT_TEMPFAIL = 75
EXIT_CONFIG = 78


class TapearcError(Exception):
    """Base of every error meant for the user; ``str(err)`` is the one-line message."""

    exit_code: int = EXIT_FAILED

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(f"{message} ({hint})" if hint else message)


class UsageError(TapearcError):
    """The command line asks for something impossible."""

    exit_code = EXIT_USAGE


class ConfigError(TapearcError):
    """The configuration file is missing, unreadable or invalid; the message names the key."""

    exit_code = EXIT_CONFIG


class IntegrityError(TapearcError):
    """Data failed authentication or a checksum: tampering, corruption, truncation."""

    exit_code = EXIT_DATAERR


class MediumError(IntegrityError):
    """The medium cannot give back what it holds: an I/O error (EIO), a short read, a damaged
    record, end of data before the end of an archive, a file missing from a volume.

    Raised by drivers; the jobs read the study from the other pool's copy and report the damage
    per archive. ``files`` are the medium file numbers of the data files of the archives
    affected (empty when the driver cannot tell).
    """

    def __init__(self, message: str, *, hint: str | None = None,
                 files: Sequence[int] = ()) -> None:
        super().__init__(message, hint=hint)
        self.files = tuple(files)


class WrongKeyError(IntegrityError):
    """None of the available private keys can open an archive; names the key ids it needs."""


class FormatError(IntegrityError):
    """Bytes are not a tapearc stream, or one of a version this release cannot read."""


class PeerRefused(TapearcError):
    """A peer refused us for a reason another try cannot fix: our credentials (HTTP 401/403)
    or its certificate, which we do not trust. The message names which."""


class UnavailableError(TapearcError):
    """A required program, device or service is missing."""

    exit_code = EXIT_UNAVAILABLE


class ToolMissing(UnavailableError):
    """An external program is not installed; the message says which package provides it."""


class DeviceUnavailable(UnavailableError):
    """A configured device does not exist or cannot be opened."""


class OperatorActionNeeded(TapearcError):
    """Someone must act (load, swap, label a cartridge) or wait; then run again."""

    exit_code = EXIT_TEMPFAIL


class NoMedium(OperatorActionNeeded):
    """No cartridge or disc is loaded where one is needed."""


class WrongMedium(OperatorActionNeeded):
    """The loaded cartridge is not the expected one (other pool, site, or barcode)."""


class MediumFull(OperatorActionNeeded):
    """The medium reached early warning or its capacity; nothing partial was recorded."""


class WriteProtected(OperatorActionNeeded):
    """The loaded medium is write-protected."""


class Locked(OperatorActionNeeded):
    """Another tapearc run holds the lock."""


class PolicyRefused(OperatorActionNeeded):
    """A rotation or safety rule refuses the action; ``--force`` overrides and is audited."""


class ToolFailed(TapearcError):
    """An external program failed; the message holds its exit code and the tail of stderr."""


class ToolTimeout(ToolFailed):
    """An external program did not finish in time and was killed."""


class DeviceError(TapearcError):
    """The device reported an I/O error that is not a full or missing medium."""


class CatalogError(TapearcError):
    """The catalog is missing, locked, corrupt or inconsistent with the media."""


class NotFound(TapearcError):
    """A study, cartridge, key or archive asked for does not exist."""
