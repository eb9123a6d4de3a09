"""One C-STORE association spoken directly on a socket: the restore's data path.

pynetdicom runs a reactor thread per association that polls its socket every fraction of a
millisecond and builds every PDU and DIMSE message as Python objects: a few milliseconds of CPU
per instance, which on a small server is CPU taken from the PACS receiving them and from the
tape reads and decryption feeding the sender (measured: 191 instances/s on one association
against storescu's 245 into the same Orthanc). This module does only what storing needs, in the
calling thread, with blocking sockets: A-ASSOCIATE (PS3.8 9.3.2-9.3.4), P-DATA-TF carrying the
C-STORE-RQ command (PS3.7 9.3.1.1, Implicit VR Little Endian) and the file's data set as it
is stored (``socket.sendfile``: from the page cache where the socket allows), the C-STORE-RSP status, and
A-RELEASE / A-ABORT. The rest of tapearc's DICOM (queries, commitment, the receiver) stays on
pynetdicom.

Every byte written is charged to the rate limiter first, in pieces of ``RateLimiter.CHUNK``,
so the limit holds on the wire. A data set whose transfer syntax the PACS did not accept but
whose other little-endian syntax it did is re-encoded with pydicom, as pynetdicom would.
"""

from __future__ import annotations

import socket
import ssl
import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING, BinaryIO

from tapearc.dicomnet.peer import Peer
from tapearc.errors import ConfigError, UnavailableError
from tapearc.support.limits import RateLimiter

if TYPE_CHECKING:
    from tapearc.dicomnet.fileinfo import FileInfo

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLEMENTATION_UID = "1.2.826.0.1.3680043.9.3811.3.0.4"  # pynetdicom's: tapearc builds on it
IMPLEMENTATION_NAME = "TAPEARC"
#: Largest P-DATA PDU we accept (what we tell the peer).
MAX_RECEIVE = 262144
#: A peer that sets no limit still gets PDUs of this size (PS3.8 allows any size).
DEFAULT_SEND = 1 << 20


class AssociationLost(OSError):
    """The peer closed or aborted the association, or stopped answering."""


def _item(kind: int, body: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(body)) + body


def uid_bytes(value: str) -> bytes:
    """A UID as a DICOM value: ASCII, padded with NUL to an even length."""
    raw = value.encode("ascii")
    return raw + b"\0" if len(raw) % 2 else raw


def _ae(title: str) -> bytes:
    return title.encode("ascii").ljust(16)[:16]


def associate_rq(calling: str, called: str,
                 contexts: Sequence[tuple[int, str, Sequence[str]]]) -> bytes:
    """An A-ASSOCIATE-RQ PDU proposing ``(context id, abstract syntax, transfer syntaxes)``."""
    items = _item(0x10, APPLICATION_CONTEXT.encode())
    for cid, abstract, syntaxes in contexts:
        subs = _item(0x30, abstract.encode()) + b"".join(_item(0x40, ts.encode())
                                                         for ts in syntaxes)
        items += _item(0x20, bytes((cid, 0, 0, 0)) + subs)
    user = (_item(0x51, struct.pack(">I", MAX_RECEIVE)) + _item(0x52, IMPLEMENTATION_UID.encode())
            + _item(0x55, IMPLEMENTATION_NAME.encode()))
    items += _item(0x50, user)
    body = struct.pack(">HH", 1, 0) + _ae(called) + _ae(calling) + bytes(32) + items
    return struct.pack(">BBI", 0x01, 0, len(body)) + body


def parse_associate_ac(body: bytes) -> tuple[dict[int, str], int]:
    """The accepted contexts (id -> transfer syntax) and the peer's maximum PDU length."""
    accepted: dict[int, str] = {}
    max_pdu = 0
    pos = 68  # version, reserved, called and calling AE, reserved
    while pos + 4 <= len(body):
        kind, _, length = struct.unpack_from(">BBH", body, pos)
        value = body[pos + 4:pos + 4 + length]
        pos += 4 + length
        if kind == 0x21 and len(value) >= 4 and value[2] == 0:  # result 0: acceptance
            sub = value[4:]
            if len(sub) >= 4 and sub[0] == 0x40:
                (n,) = struct.unpack_from(">H", sub, 2)
                accepted[value[0]] = sub[4:4 + n].rstrip(b"\0 ").decode("ascii")
        elif kind == 0x50:
            sub_pos = 0
            while sub_pos + 4 <= len(value):
                sub_kind, _, n = struct.unpack_from(">BBH", value, sub_pos)
                if sub_kind == 0x51 and n == 4:
                    (max_pdu,) = struct.unpack_from(">I", value, sub_pos + 4)
                sub_pos += 4 + n
    return accepted, max_pdu


def store_rq(message_id: int, sop_class: str, sop_instance: str) -> bytes:
    """The C-STORE-RQ command set (group 0000, Implicit VR Little Endian)."""
    elements = [
        (0x0002, uid_bytes(sop_class)),
        (0x0100, struct.pack("<H", 0x0001)),  # C-STORE-RQ
        (0x0110, struct.pack("<H", message_id & 0xFFFF)),
        (0x0700, struct.pack("<H", 0x0000)),  # priority: medium
        (0x0800, struct.pack("<H", 0x0000)),  # a data set follows
        (0x1000, uid_bytes(sop_instance)),
    ]
    body = b"".join(struct.pack("<HHI", 0x0000, elem, len(v)) + v for elem, v in elements)
    return struct.pack("<HHII", 0x0000, 0x0000, 4, len(body)) + body


def parse_command(raw: bytes) -> dict[int, bytes]:
    """A command set's elements by element number (group 0000, Implicit VR Little Endian)."""
    out: dict[int, bytes] = {}
    pos = 0
    while pos + 8 <= len(raw):
        group, elem, length = struct.unpack_from("<HHI", raw, pos)
        out[elem] = raw[pos + 8:pos + 8 + length] if group == 0 else b""
        pos += 8 + length
    return out


class Association:
    """An association we request, spoken directly: proposes ``contexts`` ((SOP class,
    [syntaxes]) pairs); ``accepted`` holds the (SOP class, transfer syntax) pairs the peer
    took. Bytes sent are charged to ``limiter`` (none: unlimited)."""

    def __init__(self, peer: Peer, local_aet: str, contexts: Sequence[tuple[str, list[str]]],
                 *, timeout: float, limiter: RateLimiter | None = None) -> None:
        from tapearc.support.limits import Limits

        self.peer = peer
        self.timeout = timeout
        self.limiter = limiter or RateLimiter(Limits())
        self._message_id = 0
        self._sock = self._connect()
        try:
            numbered = [(2 * n + 1, abstract, ts) for n, (abstract, ts) in enumerate(contexts)]
            self._sock.sendall(associate_rq(local_aet, peer.aet, numbered))
            kind, body = self._read_pdu()
            if kind == 0x03:
                raise ConfigError(
                    f"{peer} rejected the association from {local_aet}",
                    hint="check the called and calling AE titles and that the PACS knows "
                         "this host")
            if kind != 0x02:
                raise UnavailableError(f"{peer} answered the association request with PDU "
                                       f"type 0x{kind:02X}")
            by_id, max_pdu = parse_associate_ac(body)
        except AssociationLost as exc:
            self._sock.close()
            raise UnavailableError(
                f"no association with {peer}: {exc}",
                hint="check that the PACS is running, the address and port, and the TLS "
                     "settings") from None
        except BaseException:
            self._sock.close()
            raise
        abstract_of = {cid: abstract for cid, abstract, _ in numbered}
        #: (SOP class, transfer syntax) -> presentation context id
        self.contexts = {(abstract_of[cid], ts): cid for cid, ts in by_id.items()
                         if cid in abstract_of}
        self.accepted = set(self.contexts)
        self._pdu_data = (max_pdu or DEFAULT_SEND) - 6  # a PDV item's header is 6 bytes
        self.established = True

    def _connect(self) -> socket.socket:
        try:
            sock = socket.create_connection((self.peer.host, self.peer.port), timeout=self.timeout)
        except OSError as exc:
            raise UnavailableError(
                f"no association with {self.peer}: {exc.strerror or exc}",
                hint="check that the PACS is running, the address and port") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        tls = self.peer.tls_args()
        if tls is None:
            return sock
        context, server_name = tls
        try:
            return context.wrap_socket(sock, server_hostname=server_name)
        except (ssl.SSLError, OSError) as exc:
            sock.close()
            raise UnavailableError(f"TLS with {self.peer} failed: {exc}",
                                   hint="check the TLS settings and certificates") from None

    # ------------------------------------------------------------------ wire

    def _recv_exact(self, n: int) -> bytes:
        parts: list[bytes] = []
        while n:
            try:
                chunk = self._sock.recv(min(n, 1 << 20))
            except (TimeoutError, OSError) as exc:
                raise AssociationLost(f"no answer from {self.peer}: {exc}") from None
            if not chunk:
                raise AssociationLost(f"{self.peer} closed the connection")
            parts.append(chunk)
            n -= len(chunk)
        return b"".join(parts)

    def _read_pdu(self) -> tuple[int, bytes]:
        kind, _, length = struct.unpack(">BBI", self._recv_exact(6))
        return kind, self._recv_exact(length)

    def _send(self, data: bytes | memoryview) -> None:
        """Write ``data``, charging the rate limiter before each piece."""
        view = memoryview(data)
        try:
            if self.limiter.setting().mb_per_s is None:
                self._sock.sendall(view)
                return
            for start in range(0, len(view), RateLimiter.CHUNK):
                piece = view[start:start + RateLimiter.CHUNK]
                self.limiter.acquire(len(piece), instances=0)
                self._sock.sendall(piece)
        except OSError as exc:
            raise AssociationLost(f"sending to {self.peer} failed: {exc}") from None

    def _send_file(self, fh: BinaryIO, offset: int, count: int) -> None:
        """Write ``count`` bytes of a file from ``offset`` with ``socket.sendfile`` (from the page
        cache, no copy through Python; TLS sockets read and write), charged in pieces."""
        limited = self.limiter.setting().mb_per_s is not None
        piece_max = RateLimiter.CHUNK if limited else count
        try:
            while count:
                piece = min(piece_max, count)
                if limited:
                    self.limiter.acquire(piece, instances=0)
                sent = self._sock.sendfile(fh, offset, piece)
                if sent == 0:
                    raise AssociationLost(f"the file ended early sending to {self.peer}")
                offset += sent
                count -= sent
        except AssociationLost:
            raise
        except OSError as exc:
            raise AssociationLost(f"sending to {self.peer} failed: {exc}") from None

    def _pdv_header(self, cid: int, command: bool, last: bool, n: int) -> bytes:
        """The P-DATA-TF PDU header and its one PDV item header for ``n`` bytes of data."""
        control = (1 if command else 0) | (2 if last else 0)
        return struct.pack(">BBIIBB", 0x04, 0, n + 6, n + 2, cid, control)

    def _read_message(self) -> tuple[dict[int, bytes], bytes | None]:
        """The next DIMSE message: its command elements and its data set (None without one).
        ``AssociationLost`` when the peer aborts or releases instead."""
        command, data = bytearray(), bytearray()
        elements: dict[int, bytes] | None = None
        while True:
            kind, body = self._read_pdu()
            if kind in (0x05, 0x07):
                self.established = False
                raise AssociationLost(f"{self.peer} " + ("aborted" if kind == 0x07 else
                                                        "released") + " the association")
            if kind != 0x04:
                raise AssociationLost(f"unexpected PDU type 0x{kind:02X} from {self.peer}")
            pos = 0
            while pos + 6 <= len(body):
                (length,) = struct.unpack_from(">I", body, pos)
                control = body[pos + 5]
                fragment = body[pos + 6:pos + 4 + length]
                pos += 4 + length
                if control & 1:
                    command += fragment
                    if control & 2:
                        elements = parse_command(bytes(command))
                        if elements.get(0x0800) == b"\x01\x01":  # no data set follows
                            return elements, None
                elif elements is not None:
                    data += fragment
                    if control & 2:
                        return elements, bytes(data)

    # ------------------------------------------------------------------ end

    def release(self) -> None:
        """A-RELEASE, waiting briefly for the answer; the socket is closed either way."""
        try:
            if self.established:
                self._sock.sendall(struct.pack(">BBII", 0x05, 0, 4, 0))
                self._sock.settimeout(min(self.timeout, 5.0))
                while self._read_pdu()[0] != 0x06:
                    pass
        except OSError:
            pass
        finally:
            self.established = False
            self._sock.close()

    def abort(self) -> None:
        """A-ABORT and close."""
        try:
            if self.established:
                self._sock.sendall(struct.pack(">BBIBBBB", 0x07, 0, 4, 0, 0, 0, 0))
        except OSError:
            pass
        finally:
            self.established = False
            self._sock.close()


class StoreAssociation(Association):
    """An association for C-STORE (see the module doc)."""


    def store(self, info: FileInfo) -> tuple[int | None, str]:
        """Send one file; (status, comment), status None when it could not go: no presentation
        context, or the file could not be read (``ValueError``, before anything was sent)."""
        cid = self.contexts.get((info.sop_class, info.transfer_syntax))
        encoded: bytes | memoryview | None = None
        fh: BinaryIO | None = None
        try:
            if cid is None or info.data_offset < 0:
                encoded, cid = self._reencoded(info)
                if cid is None:
                    return None, (f"no presentation context: {self.peer.aet} does not accept "
                                  f"SOP class {info.sop_class} in transfer syntax "
                                  f"{info.transfer_syntax}")
            elif info.data is not None:
                encoded = memoryview(info.data)[info.data_offset:]
            else:
                fh = open(info.path, "rb", buffering=0)  # noqa: SIM115 -- closed below
        except OSError as exc:
            raise ValueError(f"cannot read {info.path.name}: {exc.strerror or exc}") from None
        try:
            self._message_id += 1
            command = store_rq(self._message_id, info.sop_class, info.sop_instance)
            self._send(self._pdv_header(cid, True, True, len(command)) + command)
            if fh is not None:
                self._send_dataset_file(cid, fh, info)
            elif encoded is not None:
                self._send_dataset_bytes(cid, encoded)
        finally:
            if fh is not None:
                fh.close()
        return self._response()

    def _send_dataset_file(self, cid: int, fh: BinaryIO, info: FileInfo) -> None:
        offset, left = info.data_offset, info.size - info.data_offset
        while True:
            n = min(left, self._pdu_data)
            self._send(self._pdv_header(cid, False, n == left, n))
            self._send_file(fh, offset, n)
            offset += n
            left -= n
            if not left:
                return

    def _send_dataset_bytes(self, cid: int, data: bytes | memoryview) -> None:
        view = memoryview(data)
        start = 0
        while True:
            piece = view[start:start + self._pdu_data]
            start += len(piece)
            last = start >= len(view)
            self._send(self._pdv_header(cid, False, last, len(piece)))
            self._send(piece)
            if last:
                return

    def _reencoded(self, info: FileInfo) -> tuple[bytes | None, int | None]:
        """The data set encoded by pydicom: in the other little-endian syntax when only that one
        was accepted (compressed syntaxes are never transcoded), or in its own syntax when the
        file's data set offset is unknown."""
        from io import BytesIO

        from pydicom import dcmread
        from pydicom.filebase import DicomBytesIO
        from pydicom.filewriter import write_dataset
        from pydicom.uid import UID

        native = (EXPLICIT_LE, IMPLICIT_LE)
        candidates = [info.transfer_syntax] if info.data_offset < 0 else []
        if info.transfer_syntax in native:
            candidates += [ts for ts in native if ts != info.transfer_syntax]
        for ts in candidates:
            cid = self.contexts.get((info.sop_class, ts))
            if cid is None:
                continue
            ds = dcmread(BytesIO(info.data) if info.data is not None else info.path)
            out = DicomBytesIO()
            out.is_implicit_VR = UID(ts).is_implicit_VR
            out.is_little_endian = UID(ts).is_little_endian
            write_dataset(out, ds)
            return out.getvalue(), cid
        return None, None

    def _response(self) -> tuple[int | None, str]:
        """The C-STORE-RSP's status and comment."""
        elements, _ = self._read_message()
        status = elements.get(0x0900)
        if status is None or len(status) != 2:
            return None, "the PACS answered without a status"
        (code,) = struct.unpack("<H", status)
        return code, elements.get(0x0902, b"").rstrip(b"\0 ").decode("ascii", "replace")
