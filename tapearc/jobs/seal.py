"""The archive seal: what the writing host signs about each archive, readable without a key.

The write job signs, with the site signing key, the facts the catalog records about an archive
(where it is, its size, its header, its ciphertext checksum, the SHA-256 of every member) and
the head of the catalog's audit chain at that moment. The seal goes into the archive's index on
the medium (itself signed) and into the catalog row. Two checks follow, without any decryption:

* a catalog row or its copies that differ from the seal were edited after the write: the
  catalog disagrees with the medium, the medium is not to blame (``row_problems``);
* an audit chain whose first rows differ from a head some seal signed was rewritten, which
  needs no more than write access to the catalog; a seal needs the signing key
  (``chain_problems``).

Audit rows appended after the newest seal are covered from the next archive written on.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tapearc.errors import IntegrityError
from tapearc.format.tarstream import member_name

if TYPE_CHECKING:
    from tapearc.format.keys import SigningKey, TrustedSigner

SEAL_VERSION = 1
#: Catalog columns a seal vouches for, as written.
ROW_FIELDS = ("archive_uuid", "barcode", "kind", "data_file", "data_blocks", "plaintext_bytes",
              "medium_checksum")


def instances_digest(members: Iterable[Mapping[str, Any]]) -> str:
    """SHA-256 over (member, data_offset, length, sha256) of an archive's members in stream
    order: one value for what the catalog's copies and the index's instances must agree on."""
    rows = sorted(([str(m["member"]), int(m["data_offset"]), int(m["length"]), str(m["sha256"])]
                   for m in members), key=lambda r: (r[1], r[0]))
    return hashlib.sha256(json.dumps(rows, separators=(",", ":")).encode()).hexdigest()


def make_seal(key: SigningKey, archive: Mapping[str, Any], members: Iterable[Mapping[str, Any]],
              audit: Mapping[str, Any], at: str) -> dict[str, Any]:
    """The signed seal of an archive about to be committed (``archive`` holds ROW_FIELDS and
    ``header``; ``audit`` is ``Catalog.audit_anchor()``). Of ``members`` (the index entries),
    the DICOM instances and opaque files are sealed: they are what the catalog records as
    copies (a catalog copy's own file is not)."""
    from tapearc.format.signing import sign_document

    body = {"seal": SEAL_VERSION, "at": at, **{k: archive[k] for k in ROW_FIELDS},
            "header_sha256": hashlib.sha256(bytes(archive["header"])).hexdigest(),
            "instances_sha256": instances_digest(
                m for m in members if "sop_uid" in m or "file_path" in m),
            "audit": {k: audit[k] for k in ("first", "rows", "hash")}}
    return sign_document(key, body)


def open_seal(seal: Mapping[str, Any], trusted: Sequence[TrustedSigner], what: str
              ) -> dict[str, Any]:
    """The body of a seal signed by a trusted key; OriginError otherwise."""
    from tapearc.format.signing import verify_document

    _, body = verify_document(seal, trusted, what=what)
    if body.get("seal") != SEAL_VERSION:
        raise IntegrityError(f"{what}: unknown seal version")
    return body


def row_problems(body: Mapping[str, Any], archive: Mapping[str, Any],
                 copies: Iterable[Mapping[str, Any]]) -> list[str]:
    """What of a catalog archive row and its copies differs from the (verified) seal body."""
    wrong = [k for k in ROW_FIELDS if body.get(k) != archive[k]]
    if body.get("header_sha256") != hashlib.sha256(bytes(archive["header"])).hexdigest():
        wrong.append("header")
    copies = list(copies)
    if body.get("instances_sha256") != instances_digest(copies):
        wrong.append("copies (member offsets, lengths or checksums)")
    # the seal pins each member, whose name holds its UIDs; the catalog's link from a member to
    # an instance is not sealed, so a swap would serve one patient's image as another's
    if any(c.get("sop_uid") is not None and c["member"] != member_name(
            c["study_uid"], c["series_uid"], c["sop_uid"], int(c["version"])) for c in copies):
        wrong.append("copies (a member catalogued as another instance)")
    return wrong


def chain_problems(seals: Sequence[tuple[str, Mapping[str, Any]]], anchor: Mapping[str, Any],
                   hashes: Mapping[int, str], started: str | None,
                   restored: Sequence[tuple[int, str]] = ()) -> list[str]:
    """Compare the audit chain with the heads the seals signed.

    ``seals`` are (where, verified body); ``anchor`` is the chain now (``audit_anchor``),
    ``hashes`` the chain's hash at each sealed row count, ``started`` its first row's time.
    A seal of another chain (a catalog rebuilt from media starts a new one) is fine when it is
    not newer than every row of this chain; a newer one means this chain replaced the one it
    sealed (times have one-second resolution: a rebuild may start in a seal's second).
    ``restored`` are the points where the catalog was started again from a catalog copy (the
    copy's row count, the time of the restore): the rows a seal pinned beyond the copy were
    lost with the catalog, which is fine for a seal not newer than the restore, by the same rule.
    """
    problems: list[str] = []
    for where, body in seals:
        audit = body.get("audit") or {}
        if not audit.get("rows"):
            continue  # sealed before the chain had a row: it pins nothing
        at = str(body.get("at", ""))
        if audit.get("first") == anchor["first"]:
            rows = int(audit.get("rows", -1))
            if any(rows > kept and at <= when for kept, when in restored):
                continue  # its rows were after the copy: lost with the catalog
            if hashes.get(rows) != audit.get("hash"):
                problems.append(
                    f"the audit log was rewritten: its first {rows} rows are not those signed "
                    f"when {where} was written ({body.get('at')})")
        elif started is not None and at > started:
            problems.append(
                f"the audit log was replaced: {where} was written ({body.get('at')}) by a catalog "
                f"whose audit log began otherwise, after this one's first row ({started})")
    return problems


def seal_positions(seals: Iterable[Mapping[str, Any]], first: str) -> set[int]:
    """The audit row counts the seals of this chain pinned."""
    return {int(b["audit"]["rows"]) for b in seals
            if isinstance(b.get("audit"), dict) and b["audit"].get("first") == first}
