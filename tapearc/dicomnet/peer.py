"""A remote DICOM node (``AET@HOST:PORT``) and the TLS options of an association.

``parse_peer("ORTHANC@pacs.example.org:104")`` gives a ``Peer``. TLS is optional on every
association tapearc makes or accepts; when it is on, certificate checks are on unless the user
turns them off explicitly (``TlsOptions(verify=False)``, ``--tls-no-verify``).
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from pathlib import Path

from tapearc.errors import ConfigError, UsageError

#: DICOM AE title: 1-16 characters of the default character repertoire, no backslash, no
#: control characters, not only spaces (PS3.5 table 6.2-1, VR "AE").
_AET_RE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")
_PEER_RE = re.compile(r"^(?P<aet>[^@]+)@(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:@\[\]]+)):(?P<port>\d+)$")


@dataclass(frozen=True)
class TlsOptions:
    """TLS for one association: trust anchors, our own certificate, and whether to check.

    ``ca_file`` holds the certificates we trust (None: the system store, for a client).
    ``cert_file``/``key_file`` is our certificate, required on the receiving side and sent as a
    client certificate when given (Orthanc requires one by default). ``verify`` checks the
    peer's certificate chain and, for a client, that it names the host we connect to.
    ``server_name`` overrides that host name (when connecting by IP to a named certificate).
    """

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    verify: bool = True
    server_name: str | None = None

    def client_context(self) -> ssl.SSLContext:
        """An SSL context for an association we request."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            if self.ca_file is not None:
                ctx.load_verify_locations(cafile=str(self.ca_file))
            if self.cert_file is not None:
                ctx.load_cert_chain(str(self.cert_file), _opt_str(self.key_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"cannot load the TLS certificates: {exc}",
                hint="check --tls-ca, --tls-cert and --tls-key (PEM files)",
            ) from exc
        if not self.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        return ctx

    def server_context(self) -> ssl.SSLContext:
        """An SSL context for associations we accept (the receiver, the C-MOVE destination)."""
        if self.cert_file is None:
            raise ConfigError(
                "a TLS receiver needs its own certificate",
                hint="pass --tls-cert and --tls-key",
            )
        if self.verify and self.ca_file is None:
            raise ConfigError(
                "a TLS receiver that checks certificates needs the CA of its peers",
                hint="pass --tls-ca FILE, or --tls-no-verify to accept any peer",
            )
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(str(self.cert_file), _opt_str(self.key_file))
            if self.ca_file is not None:
                ctx.load_verify_locations(cafile=str(self.ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"cannot load the TLS certificates: {exc}",
                hint="check --tls-ca, --tls-cert and --tls-key (PEM files)",
            ) from exc
        ctx.verify_mode = ssl.CERT_REQUIRED if self.verify else ssl.CERT_NONE
        return ctx


@dataclass(frozen=True)
class Peer:
    """A remote application entity: its AE title, address, and TLS options (None: plain TCP)."""

    aet: str
    host: str
    port: int
    tls: TlsOptions | None = None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.aet}@{host}:{self.port}"

    def tls_args(self) -> tuple[ssl.SSLContext, str] | None:
        """The ``(context, server_hostname)`` pair pynetdicom's ``associate`` takes."""
        if self.tls is None:
            return None
        return self.tls.client_context(), self.tls.server_name or self.host


def check_aet(aet: str, what: str = "AE title") -> str:
    """Return ``aet`` if it is a valid AE title, else raise ``UsageError``."""
    if not _AET_RE.match(aet) or not aet.strip():
        raise UsageError(
            f"invalid {what} {aet!r}",
            hint="use 1-16 printable ASCII characters, no backslash, e.g. TAPEARC",
        )
    return aet


def check_port(port: int) -> int:
    """Return ``port`` if it is a TCP port number, else raise ``UsageError``."""
    if not 1 <= port <= 65535:
        raise UsageError(f"invalid port {port}", hint="use a number from 1 to 65535")
    return port


def parse_peer(text: str, *, tls: TlsOptions | None = None) -> Peer:
    """Parse ``AET@HOST:PORT`` (``AET@[::1]:PORT`` for IPv6) into a ``Peer``."""
    m = _PEER_RE.match(text.strip())
    if m is None:
        raise UsageError(
            f"cannot read the PACS address {text!r}",
            hint="write it as AET@HOST:PORT, e.g. ORTHANC@pacs.example.org:104",
        )
    port = int(m["port"])
    return Peer(
        aet=check_aet(m["aet"], "called AE title"),
        host=m["v6"] or m["host"],
        port=check_port(port),
        tls=tls,
    )


def _opt_str(path: Path | None) -> str | None:
    return None if path is None else str(path)
