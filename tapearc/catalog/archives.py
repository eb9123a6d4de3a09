"""Archives on the media and the instance copies they hold: recording a write, re-creating
them from the media's indexes (rebuild), verify outcomes, and the look-ups verify, the
nightly and the key drill make."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from typing import Any

from tapearc.catalog.audit import append_audit
from tapearc.catalog.base import CatalogBase, utcnow
from tapearc.catalog.matching import name_key

log = logging.getLogger(__name__)


class Archives(CatalogBase):
    """The archives and copies tables."""

    def last_archive(self, barcode: str) -> dict[str, Any] | None:
        """The last archive the catalog knows on a cartridge, or None."""
        rows = self.query(
            "SELECT * FROM archives WHERE barcode = ? ORDER BY data_file DESC LIMIT 1", (barcode,)
        )
        return rows[0] if rows else None

    def archives(self, barcode: str) -> list[dict[str, Any]]:
        """Archives on a cartridge in medium order."""
        return self.query("SELECT * FROM archives WHERE barcode = ? ORDER BY data_file", (barcode,))

    def run_archive_ids(self, barcode: str, run_id: int) -> list[int]:
        """Ids of the study archives run ``run_id`` wrote on ``barcode``, in medium order."""
        return [int(r[0]) for r in self.conn.execute(
            "SELECT id FROM archives WHERE barcode = ? AND run_id = ? AND kind = 'studies'"
            " ORDER BY data_file", (barcode, run_id))]

    def archives_with_key(self, key_id: str) -> list[dict[str, Any]]:
        """Archives encrypted to the key ``key_id`` (hex), with what it takes to read them."""
        rows = self.query(
            "SELECT id, barcode, data_file, start_block, data_blocks, index_bytes, header, key_ids,"
            " origin FROM archives ORDER BY id")
        return [a for a in rows if key_id in json.loads(a["key_ids"])]

    def archive_copies(self, archive_id: int) -> list[dict[str, Any]]:
        """The members of an archive in stream order, opaque files' included: member,
        data_offset, length, sha256, and the instance each DICOM member is catalogued as
        (study_uid, series_uid, sop_uid, version; NULL for an opaque file)."""
        return self.query("SELECT c.member, c.data_offset, c.length, c.sha256, i.study_uid,"
                          " i.series_uid, i.sop_uid, i.version FROM copies c"
                          " JOIN instances i ON i.id = c.instance_id WHERE c.archive_id = ?"
                          " UNION ALL SELECT member, data_offset, length, sha256, NULL, NULL,"
                          " NULL, NULL FROM opaque_copies WHERE archive_id = ?"
                          " ORDER BY data_offset", (archive_id, archive_id))

    def archive_seals(self) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
        """Every archive row with its copies, for checking the rows against the seals their
        writer signed."""
        for archive in self.query("SELECT * FROM archives ORDER BY id"):
            yield archive, self.archive_copies(archive["id"])

    def add_archive(self, archive: dict[str, Any], copies: Sequence[tuple[int, str, int, int, str]],
                    run_id: int | None,
                    file_copies: Sequence[tuple[int, str, int, int, str]] = ()) -> int:
        """Record a committed archive and its instance copies in one transaction.

        ``copies`` rows are (instance_id, member, data_offset, length, sha256); ``file_copies``
        the same for opaque files (file_id first). Called only after
        the medium confirmed the archive's data, end and index: this is the moment the studies
        count as archived on the cartridge's pool.
        """
        with self.transaction() as c:
            cur = c.execute(
                "INSERT INTO archives (archive_uuid, barcode, kind, data_file, start_block,"
                " data_blocks, index_bytes, block_size, plaintext_bytes, header, medium_checksum,"
                " key_ids, created, run_id, origin, seal)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (archive["archive_uuid"], archive["barcode"], archive.get("kind", "studies"),
                 archive["data_file"], archive["start_block"], archive["data_blocks"],
                 archive["index_bytes"], archive["block_size"], archive["plaintext_bytes"],
                 archive["header"], archive.get("medium_checksum"), json.dumps(archive["key_ids"]),
                 archive["created"], run_id, archive.get("origin"), _seal_text(archive)),
            )
            archive_id = int(cur.lastrowid or 0)
            c.executemany(
                "INSERT OR REPLACE INTO copies (instance_id, archive_id, member, data_offset,"
                " length, sha256) VALUES (?,?,?,?,?,?)",
                [(iid, archive_id, m, off, ln, sha) for iid, m, off, ln, sha in copies],
            )
            c.executemany(
                "INSERT OR REPLACE INTO opaque_copies (file_id, archive_id, member, data_offset,"
                " length, sha256) VALUES (?,?,?,?,?,?)",
                [(fid, archive_id, m, off, ln, sha) for fid, m, off, ln, sha in file_copies],
            )
            used = archive["data_blocks"] * archive["block_size"] + archive["index_bytes"]
            c.execute("UPDATE cartridges SET bytes_used = bytes_used + ? WHERE barcode = ?",
                      (used, archive["barcode"]))
            append_audit(c, "archive.write", archive["barcode"],
                         {"archive": archive["archive_uuid"], "instances": len(copies),
                          "files": len(file_copies), "data_file": archive["data_file"]})
        return archive_id

    def import_archive(self, archive: dict[str, Any], studies: Sequence[dict[str, Any]],
                       series: Sequence[dict[str, Any]], instances: Sequence[dict[str, Any]],
                       files: Sequence[dict[str, Any]] = ()) -> bool:
        """Re-create an archive and what it holds from its index (catalog rebuild).

        Returns False if the archive was already catalogued on this cartridge (the same
        archive on another pool's cartridge is a copy of its own). Instances are matched on
        (SOP UID, checksum); an unknown checksum of a known SOP UID becomes a new version.
        Opaque ``files`` are matched on (source path, checksum).
        """
        with self.transaction() as c:
            if c.execute("SELECT 1 FROM archives WHERE archive_uuid = ? AND barcode = ?",
                         (archive["archive_uuid"], archive["barcode"])).fetchone():
                return False
            now = archive["created"]
            for st in studies:
                c.execute(
                    "INSERT INTO studies (study_uid, patient_id, patient_name, patient_name_key,"
                    " birth_date, accession, study_date, description, modalities, first_seen,"
                    " updated) VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(study_uid) DO NOTHING",
                    (st["study_uid"], st.get("patient_id"), st.get("patient_name"),
                     name_key(st.get("patient_name")), st.get("birth_date") or "",
                     st.get("accession"), st.get("study_date"), st.get("description"),
                     st.get("modalities") or "", now, now),
                )
            for se in series:
                c.execute(
                    "INSERT INTO series (series_uid, study_uid, modality, series_number,"
                    " description) VALUES (?,?,?,?,?) ON CONFLICT(series_uid) DO NOTHING",
                    (se["series_uid"], se["study_uid"], se.get("modality"),
                     se.get("series_number"), se.get("description")),
                )
            cur = c.execute(
                "INSERT INTO archives (archive_uuid, barcode, kind, data_file, start_block,"
                " data_blocks, index_bytes, block_size, plaintext_bytes, header, medium_checksum,"
                " key_ids, created, origin, seal) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (archive["archive_uuid"], archive["barcode"], archive["kind"],
                 archive["data_file"], archive["start_block"], archive["data_blocks"],
                 archive["index_bytes"], archive["block_size"], archive["plaintext_bytes"],
                 archive["header"], archive.get("medium_checksum"),
                 json.dumps(archive["key_ids"]), now, archive.get("origin"), _seal_text(archive)),
            )
            archive_id = cur.lastrowid
            for inst in instances:
                row = c.execute("SELECT id FROM instances WHERE sop_uid = ? AND sha256 = ?",
                                (inst["sop_uid"], inst["sha256"])).fetchone()
                if row is None:
                    version = int(inst.get("version") or 1)
                    taken = c.execute("SELECT 1 FROM instances WHERE sop_uid = ? AND version = ?",
                                      (inst["sop_uid"], version)).fetchone()
                    if taken:  # two media disagree on a version's bytes: keep both, say so
                        top = c.execute("SELECT MAX(version) FROM instances WHERE sop_uid = ?",
                                        (inst["sop_uid"],)).fetchone()[0]
                        log.warning("instance %s version %d differs between media; kept as "
                                    "version %d", inst["sop_uid"], version, top + 1)
                        version = top + 1
                    cur = c.execute(
                        "INSERT INTO instances (sop_uid, version, series_uid, study_uid, size,"
                        " sha256, first_seen, last_seen, damaged, flags)"
                        " VALUES (?,?,?,?,?,?,?,?,?,?)",
                        (inst["sop_uid"], version, inst["series_uid"], inst["study_uid"],
                         inst["length"], inst["sha256"], now, now, inst.get("damaged"),
                         inst.get("flags") or ""),
                    )
                    instance_id = cur.lastrowid
                    c.execute("UPDATE studies SET instances = instances + 1, bytes = bytes + ?"
                              " WHERE study_uid = ?", (inst["length"], inst["study_uid"]))
                else:
                    instance_id = row[0]
                c.execute(
                    "INSERT OR REPLACE INTO copies (instance_id, archive_id, member, data_offset,"
                    " length, sha256) VALUES (?,?,?,?,?,?)",
                    (instance_id, archive_id, inst["member"], inst["data_offset"],
                     inst["length"], inst["sha256"]),
                )
            for f in files:  # known only from the medium: not present at the source until seen
                c.execute(
                    "INSERT INTO opaque_files (path, sha256, size, mtime_ns, reason, damaged,"
                    " present, first_seen, last_seen) VALUES (?,?,?,?,?,?,0,?,?)"
                    " ON CONFLICT(path, sha256) DO NOTHING",
                    (f["file_path"], f["sha256"], f["length"], f.get("mtime_ns"),
                     f.get("reason") or "", int(bool(f.get("damaged"))), now, now))
                file_id = c.execute("SELECT id FROM opaque_files WHERE path = ? AND sha256 = ?",
                                    (f["file_path"], f["sha256"])).fetchone()[0]
                c.execute(
                    "INSERT OR REPLACE INTO opaque_copies (file_id, archive_id, member,"
                    " data_offset, length, sha256) VALUES (?,?,?,?,?,?)",
                    (file_id, archive_id, f["member"], f["data_offset"], f["length"],
                     f["sha256"]))
            used = archive["data_blocks"] * archive["block_size"] + archive["index_bytes"]
            c.execute("UPDATE cartridges SET bytes_used = bytes_used + ? WHERE barcode = ?",
                      (used, archive["barcode"]))
            append_audit(c, "archive.import", archive["barcode"],
                         {"archive": archive["archive_uuid"], "instances": len(instances),
                          "files": len(files)})
        return True

    def record_verify(self, archive_id: int, result: str) -> None:
        """Store the outcome and date of a read-back check of one archive."""
        now = utcnow()
        with self.transaction() as c:
            c.execute("UPDATE archives SET verified_at = ?, verify_result = ? WHERE id = ?",
                      (now, result, archive_id))
            row = c.execute("SELECT barcode FROM archives WHERE id = ?", (archive_id,)).fetchone()
            if row and result == "ok":
                c.execute("UPDATE cartridges SET last_verified = ? WHERE barcode = ?",
                          (now, row[0]))
            append_audit(c, "archive.verify", row[0] if row else None,
                         {"archive_id": archive_id, "result": result})

    def archive_count_by_key(self) -> dict[str, int]:
        """Key id (hex) -> number of archives encrypted to it."""
        counts: dict[str, int] = {}
        for (key_ids,) in self.conn.execute("SELECT key_ids FROM archives"):
            for kid in json.loads(key_ids):
                counts[kid] = counts.get(kid, 0) + 1
        return counts


def _seal_text(archive: dict[str, Any]) -> str | None:
    seal = archive.get("seal")
    return None if seal is None else json.dumps(seal, sort_keys=True)
