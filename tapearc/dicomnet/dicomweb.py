"""DICOMweb over HTTP(S): the PACS's base URL, its credentials, and the one HTTP client that
STOW-RS, QIDO-RS and WADO-RS go through (``stow``, ``qido``, ``wado`` beside this module).

**HTTP layer.** urllib3, chosen by measurement (docs/ARCHITECTURE.md, bench/README.md): with a
generator body and a Content-Length computed from the file sizes it streams a STOW-RS batch from
disk without holding it (no growth of the process's peak memory), as fast as httpx and faster
than dicomweb-client, which takes pydicom Datasets, writes each back to bytes and joins the whole
batch into one body before sending it. urllib3 takes the standard library's ``SSLContext``, so
DIMSE TLS and HTTPS share ``TlsOptions``.

**Credentials** are read from a file or an environment variable, never from the command line;
the secret is kept out of ``repr``, messages and logs (a message names where it came from).
**TLS**: certificate and host name checks are on unless ``--tls-no-verify``; ``tls_ca`` adds a
CA bundle to the system's. An untrusted certificate and HTTP 401/403 raise ``PeerRefused`` (exit
1, naming the problem); an unreachable server, a dropped connection, HTTP 429 and 5xx raise
``Unreachable``/``Busy`` (``UnavailableError``), which callers retry.
"""

from __future__ import annotations

import base64
import ipaddress
import logging
import os
import stat
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Literal
from urllib.parse import quote, urlencode, urlsplit

from tapearc.dicomnet.peer import TlsOptions
from tapearc.errors import ConfigError, PeerRefused, TapearcError, UnavailableError, UsageError

if TYPE_CHECKING:
    import urllib3

    from tapearc.support.limits import RateLimiter

log = logging.getLogger(__name__)

AuthKind = Literal["bearer", "basic"]
#: Read size for request bodies and response streams.
CHUNK = 1 << 20
DEFAULT_TIMEOUT = 60.0
USER_AGENT = "tapearc"
#: Statuses worth another try: the server is overloaded or a gateway lost the backend.
BUSY_STATUSES = (429, 502, 503, 504)


def is_web_address(text: str) -> bool:
    """True when ``text`` is a DICOMweb base URL rather than ``AET@HOST:PORT``."""
    return text.strip().lower().startswith(("https://", "http://"))


# ------------------------------------------------------------------------------- credentials


@dataclass(frozen=True)
class Credentials:
    """An Authorization header's scheme and secret, and where the secret was read (for
    messages: a file path or a variable name, never the secret)."""

    kind: AuthKind
    secret: str = field(repr=False)
    source: str

    def header(self) -> str:
        """The ``Authorization`` header value."""
        if self.kind == "bearer":
            return f"Bearer {self.secret}"
        return "Basic " + base64.b64encode(self.secret.encode("utf-8")).decode("ascii")


def load_credentials(kind: AuthKind | None, *, file: Path | None = None,
                     env: str | None = None) -> Credentials | None:
    """The credentials of ``kind`` from ``file`` or the variable ``env`` (exactly one); None
    when ``kind`` is None. A bearer file holds the token; a basic one ``user:password``."""
    if kind is None:
        if file is not None or env is not None:
            raise ConfigError("an auth file or variable is given without the auth kind",
                              hint="set auth = \"bearer\" or \"basic\" ([pacs]) or --auth")
        return None
    if (file is None) == (env is None):
        raise ConfigError(f"{kind} authentication needs exactly one source of the secret",
                          hint="set auth_file (a file only this user reads) or auth_env "
                          "(the name of an environment variable)")
    if file is not None:
        source = f"file {file}"
        secret = _read_secret(file)
    else:
        assert env is not None
        source = f"environment variable {env}"
        value = os.environ.get(env)
        if value is None:
            raise ConfigError(f"the {source} is not set",
                              hint=f"export {env} with the {kind} credentials before the command")
        secret = value.strip()
    if not secret or any(c in secret for c in "\r\n\x00"):
        raise ConfigError(f"the {kind} credentials in the {source} are empty or span lines",
                          hint="write them on one line")
    if kind == "basic" and ":" not in secret:
        raise ConfigError(f"the basic credentials in the {source} are not user:password")
    if kind == "bearer" and any(c.isspace() for c in secret):
        raise ConfigError(f"the bearer token in the {source} contains spaces",
                          hint="the file holds the token alone")
    return Credentials(kind, secret, source)


def _read_secret(path: Path) -> str:
    try:
        st = path.stat()
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the credentials file {path}: {exc.strerror}") from None
    if st.st_mode & (stat.S_IRGRP | stat.S_IROTH | stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(f"the credentials file {path} can be read or changed by others",
                          hint=f"chmod 600 {path}")
    return text.strip()


# ------------------------------------------------------------------------------------ peer


@dataclass(frozen=True)
class WebPeer:
    """A DICOMweb service: its base URL (``https://host/dicom-web``), TLS, credentials."""

    url: str
    tls: TlsOptions = field(default_factory=TlsOptions)
    credentials: Credentials | None = None

    def __str__(self) -> str:
        return self.url

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""


def parse_web_peer(text: str, *, tls: TlsOptions | None = None,
                   credentials: Credentials | None = None) -> WebPeer:
    """Check and normalise a DICOMweb base URL; refuse one that carries credentials."""
    url = text.strip().rstrip("/")
    parts = urlsplit(url)
    hint = "write it as https://HOST[:PORT]/PATH, e.g. https://pacs.example.org/dicom-web"
    if parts.scheme.lower() not in ("https", "http") or not parts.hostname:
        raise UsageError(f"cannot read the DICOMweb address {text!r}", hint=hint)
    if parts.username or parts.password:
        raise UsageError("the DICOMweb address carries credentials",
                         hint="remove them from the URL: give them in a file or variable "
                         "(auth_file, auth_env; --auth-file, --auth-env)")
    if parts.query or parts.fragment:
        raise UsageError(f"the DICOMweb address {text!r} has a query or fragment", hint=hint)
    try:
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        raise UsageError(f"invalid port in the DICOMweb address {text!r}", hint=hint) from None
    if parts.scheme.lower() == "http" and credentials is not None and not _loopback(parts.hostname):
        raise ConfigError(f"credentials would cross the network in clear to {url}",
                          hint="use https:// (plain http is only for a proxy on this host)")
    return WebPeer(url, tls or TlsOptions(), credentials)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ------------------------------------------------------------------------------------ client


class Unreachable(UnavailableError):
    """No answer: refused, reset, timed out, or the name does not resolve."""


class Busy(UnavailableError):
    """The server answered 429 or 5xx from a gateway: worth another try later."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message, hint="the PACS is overloaded; try again later")
        self.retry_after = retry_after


class HttpError(TapearcError):
    """Any other HTTP failure; ``status`` is the code."""

    def __init__(self, message: str, status: int, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status


class WebClient:
    """HTTP requests to one ``WebPeer`` over a small pool of kept-alive connections (one per
    sending thread); use as a context manager. ``round_trips`` counts requests."""

    def __init__(self, peer: WebPeer, *, timeout: float = DEFAULT_TIMEOUT,
                 connections: int = 4) -> None:
        import urllib3

        self.peer = peer
        self.timeout = timeout
        self.round_trips = 0
        self._lock = threading.Lock()
        kwargs: dict[str, Any] = {}
        if urlsplit(peer.url).scheme.lower() == "https":
            tls = peer.tls
            kwargs["ssl_context"] = tls.client_context()
            if not tls.verify:
                kwargs.update(cert_reqs="CERT_NONE", assert_hostname=False)
                # said once here, not by urllib3 on every request
                warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)
                log.warning("certificate checks are off for %s (--tls-no-verify)", peer)
            if tls.server_name:
                kwargs["server_hostname"] = tls.server_name
        self._pool = urllib3.PoolManager(
            num_pools=2, maxsize=connections, block=True, retries=False,
            timeout=urllib3.Timeout(connect=min(timeout, 30.0), read=timeout), **kwargs)

    def __enter__(self) -> WebClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the kept-alive connections."""
        self._pool.clear()

    def url(self, path: str, fields: Mapping[str, str] | None = None) -> str:
        """``path`` (segments already quoted) under the base URL, with a query."""
        query = f"?{urlencode(fields, safe=',')}" if fields else ""
        return f"{self.peer.url}{path}{query}"

    def request(self, method: str, path: str, *, fields: Mapping[str, str] | None = None,
                headers: Mapping[str, str] | None = None, body: Iterable[bytes] | None = None,
                stream: bool = False, accept: Sequence[int] = ()) -> urllib3.BaseHTTPResponse:
        """One request; a response with status < 400 or in ``accept`` (``stream``: its body
        not read yet).

        401/403 and an untrusted certificate raise ``PeerRefused``; no answer raises
        ``Unreachable``; 429/502/503/504 raise ``Busy``; other errors ``HttpError``."""
        import urllib3

        all_headers = {"User-Agent": USER_AGENT, **(headers or {})}
        if self.peer.credentials is not None:
            all_headers["Authorization"] = self.peer.credentials.header()
        with self._lock:
            self.round_trips += 1
        try:
            resp = self._pool.request(method, self.url(path, fields), headers=all_headers,
                                      body=body, preload_content=not stream,
                                      redirect=False)  # a redirect would carry the credentials
        except urllib3.exceptions.SSLError as exc:
            raise self._tls_refused(exc) from None
        except urllib3.exceptions.NameResolutionError:
            raise Unreachable(f"cannot resolve the host of {self.peer}",
                              hint="check the PACS's host name and the DNS") from None
        except urllib3.exceptions.HTTPError as exc:
            reason = getattr(exc, "reason", None) or exc
            raise Unreachable(f"no answer from {self.peer}: {_short(reason)}",
                              hint="check that the PACS is running and the address") from None
        if resp.status < 400 or resp.status in accept:
            return resp
        try:
            excerpt = resp.read(300).decode("utf-8", "replace").strip() if resp.status >= 500 \
                else ""
        except urllib3.exceptions.HTTPError:
            excerpt = ""
        finally:
            resp.release_conn()
        raise self._status_error(method, path, resp.status, resp.headers, excerpt)

    def _tls_refused(self, exc: Exception) -> TapearcError:
        text = _short(getattr(exc, "reason", None) or exc)
        if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text \
                or "Hostname mismatch" in text or "doesn't match" in text:
            return PeerRefused(
                f"refused the certificate of {self.peer}: {text}",
                hint="give the CA that signed it (tls_ca, --tls-ca); check the host name")
        return Unreachable(f"TLS handshake with {self.peer} failed: {text}",
                           hint="check the address (is it https?) and the TLS settings")

    def _status_error(self, method: str, path: str, status: int, headers: Mapping[str, str],
                      excerpt: str) -> TapearcError:
        from http import HTTPStatus

        try:
            name = f"{status} {HTTPStatus(status).phrase}"
        except ValueError:
            name = str(status)
        what = f"{self.peer} answered HTTP {name} to {method} {path.split('?')[0] or '/'}"
        if status in (401, 403):
            creds = self.peer.credentials
            hint = (f"check the {creds.kind} credentials in the {creds.source}" if creds else
                    "configure credentials: auth and auth_file or auth_env ([pacs]), or "
                    "--auth with --auth-file or --auth-env")
            return PeerRefused(f"{what}: the credentials were refused", hint=hint)
        if status in BUSY_STATUSES:
            return Busy(what, retry_after=_retry_after(headers.get("Retry-After")))
        return HttpError(f"{what}{': ' + excerpt[:200] if excerpt else ''}", status)


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:  # an HTTP date: not worth parsing, the backoff applies
        return None


def _short(exc: object) -> str:
    text = str(exc)
    # urllib3 wraps the reason in "<urllib3.connection.HTTPSConnection object at 0x...>: ..."
    if ">: " in text:
        text = text.split(">: ", 1)[1]
    return text.strip()[:300]


def segment(uid: str) -> str:
    """A UID as one path segment (UIDs are digits and dots; anything else is quoted)."""
    return quote(uid, safe="")


# ------------------------------------------------------------------------------- multipart


def part_header(boundary: str) -> bytes:
    """The delimiter and headers before each ``application/dicom`` part."""
    return f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode("ascii")


#: A part of a STOW-RS body: the file's path, its size, and its bytes when held in memory (the
#: path then only names it).
BodyPart = tuple[Path, int, "bytes | None"]


def multipart_body(parts: Sequence[BodyPart], boundary: str, *,
                   limiter: RateLimiter | None = None,
                   ) -> tuple[Callable[[], Iterator[bytes]], int]:
    """A STOW-RS body of ``parts``: a factory of generators that read each file as the socket
    sends it, and the body's length. With ``limiter``, each part takes an instance token
    before it starts and, under a byte limit, its bytes go in pieces of ``RateLimiter.CHUNK``,
    each charged before it leaves: the limits hold on the wire."""
    head = part_header(boundary)
    tail = f"--{boundary}--\r\n".encode("ascii")
    length = sum(len(head) + size + 2 for _, size, _ in parts) + len(tail)

    def generate() -> Iterator[bytes]:
        for path, size, data in parts:
            piece = CHUNK
            if limiter is not None:
                limiter.acquire(0)  # the instance
                if limiter.setting().mb_per_s is not None:
                    piece = limiter.CHUNK
            yield head
            sent = 0
            for chunk in _pieces(path, data, piece):
                if piece != CHUNK:
                    assert limiter is not None
                    limiter.acquire(len(chunk), instances=0)
                sent += len(chunk)
                yield chunk
            if sent != size:  # the Content-Length is promised: a changed file breaks the body
                raise TapearcError(f"{path} changed size while it was being sent")
            yield b"\r\n"
        yield tail

    return generate, length


def _pieces(path: Path, data: bytes | None, piece: int) -> Iterator[bytes]:
    if data is not None:  # a copy per piece: a memcpy, cheap beside the socket
        for at in range(0, len(data), piece):
            yield data[at:at + piece]
        return
    with open(path, "rb") as fh:
        while chunk := fh.read(piece):
            yield chunk


def boundary_of(content_type: str) -> str:
    """The ``boundary`` parameter of a multipart Content-Type (``ValueError`` if none)."""
    for param in content_type.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.strip().lower() == "boundary" and value:
            return value.strip().strip('"')
    raise ValueError(f"no boundary in {content_type!r}")


class MultipartSplitter:
    """Writes each part of a streamed multipart body to its own file (``open_part()`` gives a
    new one, ``part_done(fh)`` takes it when complete), never holding more than one read plus
    the delimiter's length in memory. Feed it the body with ``feed``, then ``close``."""

    def __init__(self, boundary: str, open_part: Callable[[], BinaryIO],
                 part_done: Callable[[BinaryIO], None]) -> None:
        self._delim = b"\r\n--" + boundary.encode("ascii")
        self._open, self._done = open_part, part_done
        # the body's first delimiter has no CRLF before it: pretend it had
        self._buf = b"\r\n"
        self._part: BinaryIO | None = None
        self._in_headers = False
        self._finished = False
        self.parts = 0

    def feed(self, data: bytes) -> None:
        """Consume the next bytes of the body."""
        if self._finished:
            return
        self._buf += data
        while self._step():
            pass

    def _step(self) -> bool:
        """Take one thing off the buffer (headers, a part's end, a delimiter); False when
        more bytes are needed."""
        buf = self._buf
        if self._in_headers:  # buf starts with the CRLF that ends the delimiter line
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > 16384:
                    raise ValueError("a multipart part's headers exceed 16 KiB")
                return False
            self._buf = buf[end + 4:]
            self._in_headers = False
            self._part = self._open()
            return True
        at = buf.find(self._delim)
        if at < 0:  # part data (or preamble) up to what could be the start of a delimiter
            keep = len(self._delim)
            if len(buf) > keep:
                if self._part is not None:
                    self._part.write(buf[:-keep])
                self._buf = buf[-keep:]
            return False
        if self._part is not None:
            self._part.write(buf[:at])
            self._done(self._part)
            self._part = None
            self.parts += 1
        self._buf = buf = buf[at:]
        after = len(self._delim)
        if len(buf) < after + 2:
            return False  # "--" (the end) or the rest of the delimiter line comes next
        if buf[after:after + 2] == b"--":
            self._finished = True
            self._buf = b""
            return False
        line_end = buf.find(b"\r\n", after)  # after transport padding
        if line_end < 0:
            return False
        self._buf = buf[line_end:]
        self._in_headers = True
        return True

    def close(self) -> None:
        """The body ended: a part still open means it was cut short."""
        if self._part is not None or not self._finished:
            raise ValueError("the multipart body ended before its closing delimiter")
