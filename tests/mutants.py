"""A mutation pass over the data path: hand-made mutants, each run against the tests that should
kill it (docs/MUTANTS.md has the last result).

    PYTHONPATH=$PWD .venv/bin/python -m tests.mutants --workdir DIR [--only ID,...] [--check]

The tree is copied to a private folder under ``--workdir`` and each mutant is applied to that
copy only (the real files are never touched), then ``pytest -x`` runs the mutant's test
selection there. A mutant is *killed* when a test fails, *survived* when all pass. A snippet that
no longer matches exactly once (the code moved) is reported as *stale*, never skipped silently.
mutmut was not used: it mutates every line (well over a thousand mutants here, minutes each on
two shared cores) and installs into the project's environment; these mutants are the faults
that matter for archive safety, each with the reason it matters.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The test selections (paths relative to the tree root); -x stops at the first failure.
INGEST = ("tests/ingest",)
WRITE = ("tests/jobs/test_write_changed_source.py", "tests/jobs/test_write_vanished_source.py",
         "tests/jobs/test_write_spanning.py", "tests/jobs/test_write_unwritable_study.py",
         "tests/jobs/test_write_nothing.py", "tests/jobs/test_end_to_end.py")
RECALL = ("tests/jobs/test_recall_checksum.py", "tests/jobs/test_recall_partial.py",
          "tests/jobs/test_recall_versions.py", "tests/jobs/test_recall_choice.py",
          "tests/jobs/test_recall_output.py", "tests/jobs/test_end_to_end.py")
VERIFY = ("tests/jobs/test_verify.py", "tests/jobs/test_end_to_end.py")
REBUILD = ("tests/jobs/test_catalog_rebuild_after_interrupt.py",
           "tests/jobs/test_catalog_rebuild_newer_index.py",
           "tests/jobs/test_catalog_rebuild_partial_media.py",
           "tests/jobs/test_catalog_rebuild_then_nightly.py",
           "tests/jobs/test_catalog_rebuild_versions.py", "tests/jobs/test_end_to_end.py")
FORMAT = ("tests/format",)
DAMAGE = ("tests/jobs/test_damaged_at_source.py", "tests/jobs/test_same_sop_two_studies.py")
ONEPASS = ("tests/jobs/test_onepass.py", "tests/jobs/test_backlog.py")
ORIGIN = ("tests/format/test_signing.py", "tests/format/test_index.py",
          "tests/jobs/test_forged_media.py", "tests/jobs/test_catalog_rewrite.py")


@dataclass(frozen=True)
class Mutant:
    """One fault: in ``file``, ``old`` (which must occur exactly once) becomes ``new``."""

    id: str
    file: str
    old: str
    new: str
    why: str
    tests: tuple[str, ...]
    equivalent: str = ""
    """Why no test can kill it (the program behaves the same), when that is so."""


SCAN = "tapearc/ingest/scan.py"
WALK = "tapearc/ingest/walk.py"
DICOMFILE = "tapearc/ingest/dicomfile.py"
TARSTREAM = "tapearc/format/tarstream.py"
BASE = "tapearc/catalog/base.py"
INSTANCES = "tapearc/catalog/instances.py"
FIND = "tapearc/catalog/find.py"
ARCHIVES = "tapearc/catalog/archives.py"
WRITE_PY = "tapearc/jobs/write.py"
ARCHIVE_PY = "tapearc/jobs/archive.py"
PUMP_PY = "tapearc/jobs/pump.py"
ONEPASS_PY = "tapearc/jobs/onepass.py"
MEDIA_PY = "tapearc/jobs/media.py"
RECALL_PY = "tapearc/jobs/recall.py"
VERIFY_PY = "tapearc/jobs/verify.py"
REBUILD_PY = "tapearc/jobs/catalog.py"
SIGNING_PY = "tapearc/format/signing.py"
SAFEFS = "tapearc/support/safefs.py"

MUTANTS: tuple[Mutant, ...] = (
    # --- ingest: completeness, quiet period, stat re-scan, version detection --------------------
    Mutant("I01", SCAN, "if age < quiet_seconds:", "if False:",
           "no quiet period: a file the PACS is still writing is read", INGEST),
    Mutant("I02", SCAN, "if age < quiet_seconds:", "if age > quiet_seconds:",
           "quiet period inverted", INGEST),
    Mutant("I03", SCAN, "seen.size == item.st.st_size", "True",
           "re-scan ignores a size change (mtime kept by rsync -t / cp -p)", INGEST),
    Mutant("I04", SCAN, "seen.mtime_ns == item.st.st_mtime_ns", "True",
           "re-scan ignores an mtime change: a rewritten file of the same size is missed", INGEST),
    Mutant("I05", SCAN, 'if len(data) != st.st_size:\n        return _Left("still being written',
           'if False:\n        return _Left("still being written',
           "a file growing while it is read is catalogued half-written", INGEST),
    Mutant("I06", SCAN, "seen = known.get(item.path)", "seen = None",
           "files already read (opaque files too) are read again every night", INGEST),
    Mutant("I07", WALK, 'if entry.name.startswith("."):\n                continue',
           'if entry.name.startswith("."):\n                pass',
           "in-progress dot files of receivers are read", INGEST),
    Mutant("I08", DICOMFILE, "DICOMDIR_SOP_CLASS:\n        raise NotAnInstance",
           "DICOMDIR_SOP_CLASS + 'x':\n        raise NotAnInstance",
           "DICOMDIR not recognised as such", INGEST),
    Mutant("I09", TARSTREAM, "CONFORMANT_UID.fullmatch(uid)", "CONFORMANT_UID.match(uid)",
           "a UID with a path in it ('1.2/../x') is taken for a DICOM UID and becomes a name",
           INGEST),
    Mutant("I10", TARSTREAM, "len(uid) <= 64", "len(uid) <= 65",
           "an over-long UID is taken for a DICOM UID", INGEST),
    Mutant("I11", DICOMFILE, 'return "truncated: image attributes but no pixel data", True',
           "return None, True", "an image cut before its pixel data is taken as whole", INGEST),
    Mutant("I12", DICOMFILE, "if value + length > end:", "if value + length > end + 1:",
           "pixel data one byte short passes (boundary)", INGEST),
    Mutant("I13", DICOMFILE, "if expected is not None and length < expected:", "if False:",
           "pixel data shorter than rows x columns passes", INGEST),
    Mutant("I14", DICOMFILE,
           'raise _Broken("truncated: a sequence or pixel data has no end delimiter")',
           "return end", "compressed pixel data cut after a fragment passes", INGEST),
    Mutant("I17", BASE, "ORDER BY j.damaged IS NOT NULL, j.version DESC", "ORDER BY j.version DESC",
           "a copy damaged at the source displaces the intact archived version", DAMAGE),
    Mutant("I18", BASE, ' AND j.study_uid = i.study_uid ORDER BY', " ORDER BY",
           "the same SOP UID in two studies leaves one study without copies", DAMAGE),
    Mutant("I19", SCAN, "if compressed and found.pixel_less:", "if False:",
           "Orthanc's pixel-less copy of an image becomes a damaged version of it", INGEST),
    Mutant("I15", INSTANCES, "version = existing[0][1] + 1 if existing else 1",
           "version = existing[-1][1] + 1 if existing else 1",
           "new version numbered from the oldest, not the newest", INGEST),
    Mutant("I16", INSTANCES, "same = next((row for row in existing if row[2] == f.sha256), None)",
           "same = next((row for row in existing if row[2] == f.sha256 or True), None)",
           "a changed checksum is not a new version (the old one is overwritten in effect)",
           INGEST),
    # --- write: commit after index, checksum compare, pending selection, spanning ----------------
    Mutant("W01", ARCHIVE_PY, 'if not member.complete or member.sha256 != row["sha256"]:',
           "if not member.complete:",
           "the write-time checksum comparison deleted: changed bytes recorded as the instance",
           WRITE),
    Mutant("W02", ARCHIVE_PY, 'if not member.complete or member.sha256 != row["sha256"]:',
           'if member.sha256 != row["sha256"]:',
           "a file that grew since ingest counts as archived", WRITE),
    Mutant("W03", "tapearc/format/writer.py", "if src.read(1):", "if False:",
           "the writer does not notice a file that grew since ingest", WRITE),
    Mutant("W04", ARCHIVE_PY,
           '        if kind == "studies" and not copies and not file_copies:\n'
           '            raise _NothingToCommit\n', "",
           "an archive with no instance is committed (every source changed or vanished)", WRITE),
    Mutant("W05", ARCHIVE_PY,
           "                                                   places[i]))\n",
           "                                                   places[i]))\n"
           "                raise MediumFull('x')\n",
           "commit fails after the data: the studies must stay pending, nothing catalogued", WRITE),
    Mutant("W06", ARCHIVE_PY, "        writer.abort()\n    fanout.finish()\n",
           "        writer.abort()\n",
           "a stream abandoned at end of medium leaves its drive threads and buffers behind",
           WRITE),
    Mutant("W07", ARCHIVE_PY,
           'catalog.set_cartridge_state(label.barcode, "full", "end of medium during a write")',
           "pass", "a cartridge that hit end of medium stays appendable", WRITE),
    Mutant("W08", WRITE_PY,
           '                    catalog.set_cartridge_state(label.barcode, "full", '
           '"no room for the next study")\n',
           "", "the planner's full cartridge stays appendable", WRITE),
    Mutant("W09", WRITE_PY,
           "too_big_for_any = empty or (capacity is not None and need > capacity * (1 - SAFETY))",
           "too_big_for_any = False", "a study larger than a cartridge never spans: never written", WRITE),
    Mutant("W10", WRITE_PY, "too_big_for_any = empty or (", "too_big_for_any = (",
           "a study too big for an empty cartridge's free space closes cartridge after cartridge",
           WRITE),
    Mutant("W11", WRITE_PY, "if not taken and (free is None or used + need <= free):",
           "if False:", "a study over max_archive is not written alone (split or never)", WRITE),
    Mutant("W12", WRITE_PY, "limit = max_archive if free is None else min(max_archive, free)",
           "limit = max_archive", "the planner ignores the cartridge's free space", WRITE),
    Mutant("W13", FIND, '_PENDING_ON_POOL = " i.source_path IS NOT NULL AND" + _NO',
           '_PENDING_ON_POOL = "" + _NO',
           "instances with no source stay pending forever", WRITE + ONEPASS),
    Mutant("W14", FIND, '" WHERE c.instance_id = i.id AND k.pool = ? AND k.state IN',
           '" WHERE c.instance_id = i.id AND (k.pool = ? OR 1) AND k.state IN',
           "a copy in the other pool counts: the second pool is never written", WRITE + ONEPASS),
    Mutant("W15", PUMP_PY, "crc = zlib.crc32(memoryview(buf.data)[: buf.length], crc)",
           "crc = zlib.crc32(memoryview(buf.data)[: buf.length])",
           "the ciphertext checksum covers only the last block", WRITE),
    Mutant("W16", ARCHIVE_PY, "copy = (row[\"id\"], name, member.data_offset,",
           "copy = (row[\"id\"], name, member.header_offset,",
           "copies recorded at the tar header, not the body", WRITE),
    Mutant("W17", MEDIA_PY, "if label.pool != pool or label.site != settings.site:",
           "if label.site != settings.site:", "writes onto another pool's cartridge", WRITE),
    Mutant("W18", MEDIA_PY, "    if cart[\"state\"] != \"appendable\":\n        raise MediumFull",
           "    if False:\n        raise MediumFull", "appends to a full cartridge", WRITE),
    Mutant("W19", WRITE_PY, "result.changed += written.changed", "pass",
           "changed sources are not reported", WRITE),
    # --- one pass: a failed drive's copy, the shared buffers, the lanes' queue -------------------
    Mutant("O01", ARCHIVE_PY, "            if feed.error is not None:\n                _failed(",
           "            if False:\n                _failed(",
           "a copy whose drive failed mid-archive is committed and catalogued", ONEPASS),
    Mutant("O02", PUMP_PY, "            last = buf.holders == 0", "            last = True",
           "a buffer is reused before the slowest drive has written it", ONEPASS),
    Mutant("O03", PUMP_PY, "medium_checksum(crc32_combine(feed.header_crc, self._crc, "
           "self._chunk_bytes))", "medium_checksum(self._crc)",
           "the medium checksum leaves out the drive's header block", ONEPASS + VERIFY),
    Mutant("O04", "tapearc/format/writer.py",
           "            self._fence.wait(self._marks[slot])\n", "",
           "a plaintext buffer is refilled before the hash thread has read it", ONEPASS + FORMAT),
    # --- recall: checksum verify, fallback to the other pool, version choice, safe paths ---------
    Mutant("R01", RECALL_PY, 'data if hashlib.sha256(data).hexdigest() == m["sha256"] else None',
           "data",
           "recall writes bytes that do not match the catalog", RECALL),
    Mutant("R02", RECALL_PY, "            todo = [uid for uid in todo if results[uid].errors\n"
           "                    and _has_other_copy(catalog, uid, failed[uid], loaded)]",
           "            todo = []", "no second try from the other pool", RECALL),
    Mutant("R03", RECALL_PY, 'return any(r["barcode"] not in failed and r["barcode"] in loaded',
           'return any(r["barcode"] in loaded', "the failed cartridge counts as another copy", RECALL),
    Mutant("R04", RECALL_PY,
           'return (r["damaged"] is None, r["version"], r["barcode"] == barcode, r["pool"] == pool)',
           'return (r["damaged"] is None, r["barcode"] == barcode, r["pool"] == pool)',
           "versions ignored: whichever copy comes first", RECALL),
    Mutant("R05", RECALL_PY,
           'return (r["damaged"] is None, r["version"], r["barcode"] == barcode, r["pool"] == pool)',
           'return (r["damaged"] is None, r["barcode"] == barcode, r["version"], r["pool"] == pool)',
           "the chosen cartridge's old version beats a newer one elsewhere", RECALL),
    Mutant("R06", TARSTREAM, "    if conformant_uid(uid):\n        return uid",
           "    if True:\n        return uid",
           "recall names files after catalog UIDs without checking them", RECALL),
    Mutant("R07", SAFEFS, "os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)",
           "os.O_RDONLY | os.O_DIRECTORY, dir_fd=parent)",
           "a folder link planted in the target leads files outside it", RECALL),
    Mutant("R08", RECALL_PY, "result.verified = len(result.files) == result.instances and not result.missing",
           "result.verified = len(result.files) == result.instances",
           "a study with unarchived instances is reported verified", RECALL),
    Mutant("R09", RECALL_PY, "return (-per[barcode], barcode not in loaded, not onsite, barcode)",
           "return (-per[barcode], not onsite, barcode)",
           "an unloaded cartridge is preferred to a loaded one", RECALL),
    Mutant("R10", RECALL_PY, "first, count = reader.span(start, max(1, end - start))",
           "first, count = reader.span(0, end)",
           "recall reads the archive from its start, not from the study", RECALL),
    Mutant("R11", RECALL_PY,
           "        if number == self._last_no and self._last is not None:\n"
           "            yield self._last\n",
           "        if False:\n            yield b''\n",
           "a block shared by two members is not handed on", RECALL),
    Mutant("R12", RECALL_PY, '    bad = [r for r in results if r.errors]\n    if bad:',
           '    bad = [r for r in results if r.errors]\n    if False:',
           "a damaged study exits 75 (wait) instead of 65 (integrity)", RECALL),
    Mutant("R13", RECALL_PY, '        catalog.audit("recall", None, {',
           '        (lambda *a: None)("recall", None, {',
           "the recall is not audited", RECALL),
    # --- verify: tag/checksum checks, sample selection ------------------------------------------
    Mutant("V01", VERIFY_PY, 'if h.hexdigest() != c["sha256"]:', "if False:",
           "instance checksums not compared", VERIFY),
    Mutant("V02", VERIFY_PY, "if offset != expected:", "if False:",
           "plaintext length not compared", VERIFY),
    Mutant("V03", VERIFY_PY, '{"archive_uuid": index.archive_uuid, ', "{",
           "a catalog row naming another archive than the one on the medium passes", VERIFY),
    Mutant("V04", VERIFY_PY, "elif medium_checksum(crc) != expected:", "elif False:",
           "keyless verify does not compare the ciphertext checksum", VERIFY),
    Mutant("V05", VERIFY_PY, 'if len(index) != archive["index_bytes"]:', "if False:",
           "keyless verify does not compare the index length", VERIFY,
           equivalent="every driver's read_index checks the index length and SHA-256 against "
                      "the position it is given (drivers/layout.py IndexHeader.check) and raises"),
    Mutant("V06", VERIFY_PY, "        if exc.exit_code != EXIT_DATAERR:  # not a finding",
           "        if True:  # not a finding",
           "a damaged archive aborts verify instead of being listed", VERIFY),
    Mutant("V07", VERIFY_PY, 'result = "ok" if not found.damage and not found.catalog else',
           'result = "ok" if True else', "a failed archive is recorded as ok", VERIFY),
    Mutant("V08", VERIFY_PY, "elif sample is not None and sample < len(archives):", "elif False:",
           "--sample N reads every archive", VERIFY),
    Mutant("V09", VERIFY_PY, "archives = [a for a in archives if a[\"id\"] in set(archive_ids)]",
           "pass", "the nightly re-verifies every archive, not tonight's", VERIFY),
    Mutant("V10", VERIFY_PY,
           "verify_archive(driver, archive, copies, identities, trust, found, report)",
           "verify_medium(driver, archive, copies, trust, found, report)",
           "a full verify with the key only checks ciphertext (no tags, no instance checksums)",
           VERIFY),
    Mutant("V11", VERIFY_PY, "        index = driver.read_index(pos)\n",
           '        index = bytes(archive["index_bytes"])\n',
           "keyless verify does not read the index back", VERIFY),
    # --- rebuild: index import, versions ---------------------------------------------------------
    Mutant("B01", REBUILD_PY, 'instances = [i for i in index.instances if "sop_uid" in i]',
           "instances = index.instances", "catalog-copy members imported as instances", REBUILD),
    Mutant("B02", REBUILD_PY, "        if added and positions:\n", "        if False:\n",
           "a rebuilt cartridge is appendable: the next write appends on a guess", REBUILD),
    Mutant("B03", REBUILD_PY, "        for drive in drives or sorted(settings.drives):",
           "        for drive in drives:", "rebuild without --drive reads nothing", REBUILD),
    Mutant("B04", REBUILD_PY, "        if not driver.status().loaded:", "        if False:",
           "an empty drive stops the rebuild", REBUILD),
    Mutant("B05", REBUILD_PY, '"medium_checksum": index.medium_checksum,', '"medium_checksum": None,',
           "the ciphertext checksum is lost: keyless verify skips everything", REBUILD),
    Mutant("B06", ARCHIVES, '                    version = int(inst.get("version") or 1)\n',
           "                    version = 1\n",
           "rebuild numbers versions in the order it reads cartridges", REBUILD),
    Mutant("B07", ARCHIVES, 'row = c.execute("SELECT id FROM instances WHERE sop_uid = ? AND sha256 = ?",\n'
           '                                (inst["sop_uid"], inst["sha256"])).fetchone()',
           'row = c.execute("SELECT id FROM instances WHERE sop_uid = ?",\n'
           '                                (inst["sop_uid"],)).fetchone()',
           "rebuild merges two versions of an instance into one", REBUILD),
    Mutant("B08", ARCHIVES,
           "                      (used, archive[\"barcode\"]))\n"
           "            append_audit(c, \"archive.import\"",
           "                      (0, archive[\"barcode\"]))\n"
           "            append_audit(c, \"archive.import\"",
           "a rebuilt cartridge looks empty (bytes used 0)", REBUILD),
    Mutant("B09", REBUILD_PY, "            except IntegrityError as exc:  # forged",
           "            except ValueError as exc:  # forged",
           "one unreadable index stops the whole rebuild", REBUILD),
    # --- format: what every read relies on -------------------------------------------------------
    Mutant("F01", "tapearc/format/writer.py", "self._seal(final=True)\n        self._state = ",
           "self._seal(final=False)\n        self._state = ",
           "the last chunk is not marked final: truncation undetectable", FORMAT),
    Mutant("F02", "tapearc/format/reader.py", "n, _ = self._open(index, pending, following is None)",
           "n, _ = self._open(index, pending, None)",
           "whole-stream reads guess finality: a stream cut at a chunk boundary passes", FORMAT),
    Mutant("F03", "tapearc/format/reader.py", "if any(memoryview(block0)[len(header.raw) :]):",
           "if False:", "damage in block 0's padding passes", FORMAT),
    Mutant("F04", "tapearc/format/tarstream.py", "return -size % BLOCK", "return size % BLOCK",
           "tar bodies padded wrongly", FORMAT),
    Mutant("F05", "tapearc/format/index.py", 'if doc.get("version") != INDEX_VERSION:', "if False:",
           "an index of an unknown version is read as if known", FORMAT),
    # --- origin: signatures, the place, the index checks, the seals -----------------------------
    Mutant("S01", SIGNING_PY, "    signer = verify(sig.signed, sig.signature, CTX_HEADER,",
           "    signer = policy.trusted[0] if policy.trusted else verify(sig.signed, sig.signature, "
           "CTX_HEADER,", "any signature stanza is taken for the site's", ORIGIN),
    Mutant("S02", SIGNING_PY, "        if policy.accept_unsigned:\n",
           "        if True:\n", "an unsigned stream passes as old format", ORIGIN),
    Mutant("S03", SIGNING_PY, "    if barcode is not None and place.barcode != barcode:",
           "    if False:", "an archive copied to another cartridge passes", ORIGIN),
    Mutant("S04", "tapearc/format/index.py", '        self.check_strings(doc, "index")\n', "",
           "control characters and ../ in an index reach the catalog", ORIGIN),
    Mutant("S05", "tapearc/jobs/seal.py", "        if hashes.get(rows) != audit.get(\"hash\"):",
           "        if False:", "a rewritten audit chain passes catalog check", ORIGIN),
    Mutant("S06", "tapearc/jobs/seal.py", "    wrong = [k for k in ROW_FIELDS if body.get(k) != archive[k]]",
           "    wrong = []", "an edited archive row passes the seal check", ORIGIN),
)


@dataclass
class Outcome:
    """What one mutant's run gave."""

    mutant: Mutant
    result: str  # killed, equivalent, survived, stale
    test: str
    seconds: float
    line: int


def copy_tree(workdir: Path) -> Path:
    """A private copy of the tree (no VCS, no caches, no bytecode) under ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    target = Path(tempfile.mkdtemp(prefix="tree-", dir=workdir))
    ignore = shutil.ignore_patterns(".git", ".venv", "__pycache__", ".mypy_cache", ".ruff_cache",
                                    ".pytest_cache", "demo", "*.pyc")
    for item in ROOT.iterdir():
        if item.name in (".git", ".venv", "demo") or item.name.endswith("_cache"):
            continue
        if item.is_dir():
            shutil.copytree(item, target / item.name, ignore=ignore, symlinks=True)
        else:
            shutil.copy2(item, target / item.name)
    return target


def run_tests(tree: Path, tests: tuple[str, ...], timeout: float) -> tuple[int, str]:
    """pytest -x over ``tests`` in ``tree``: (return code, the first failing test or '')."""
    # no bytecode: a mutant and its original can share size and mtime second, and a stale .pyc
    # would then run the wrong code
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-rfE",
           "--no-header", *tests]
    try:
        done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return -1, f"(timeout after {timeout:.0f} s)"
    first = re.search(r"^(?:FAILED|ERROR) (\S+)", done.stdout, re.MULTILINE)
    return done.returncode, first.group(1) if first else ""


def run_mutant(tree: Path, mutant: Mutant, timeout: float) -> Outcome:
    """Apply ``mutant`` to the copy, run its tests, restore the file."""
    path = tree / mutant.file
    original = path.read_text()
    count = original.count(mutant.old)
    line = original[: original.find(mutant.old)].count("\n") + 1 if count else 0
    if count != 1:
        return Outcome(mutant, "stale", f"(snippet found {count} times)", 0.0, line)
    started = time.monotonic()
    path.write_text(original.replace(mutant.old, mutant.new))
    try:
        code, test = run_tests(tree, mutant.tests, timeout)
    finally:
        path.write_text(original)
    seconds = time.monotonic() - started
    if code == 0:
        if mutant.equivalent:
            return Outcome(mutant, "equivalent", mutant.equivalent, seconds, line)
        return Outcome(mutant, "survived", "", seconds, line)
    if code in (1, -1):
        return Outcome(mutant, "killed", test, seconds, line)
    return Outcome(mutant, "killed", f"(pytest exit {code}: collection) {test}".strip(), seconds,
                   line)


def markdown(outcomes: list[Outcome]) -> str:
    """The result table."""
    killed = sum(o.result == "killed" for o in outcomes)
    lines = [f"{killed} of {len(outcomes)} mutants killed, "
             f"{sum(o.result == 'equivalent' for o in outcomes)} equivalent, "
             f"{sum(o.result == 'survived' for o in outcomes)} survived, "
             f"{sum(o.result == 'stale' for o in outcomes)} stale.", "",
             "| id | location | mutant | result | killed by |", "| --- | --- | --- | --- | --- |"]
    for o in outcomes:
        where = f"{o.mutant.file.removeprefix('tapearc/')}:{o.line}"
        test = o.test.split("[")[0].removeprefix("tests/")  # parameters are cut at a space
        lines.append(f"| {o.mutant.id} | {where} | {o.mutant.why} | {o.result} | "
                     f"{test.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, required=True,
                        help="folder for the private copy of the tree (not the repository)")
    parser.add_argument("--only", default="", help="comma-separated mutant ids")
    parser.add_argument("--check", action="store_true",
                        help="only check that every snippet still matches once")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per mutant")
    parser.add_argument("--json", type=Path, help="also write the outcomes as JSON here")
    args = parser.parse_args()
    wanted = {m for m in args.only.split(",") if m}
    mutants = [m for m in MUTANTS if not wanted or m.id in wanted]
    if args.workdir.resolve().is_relative_to(ROOT):
        parser.error("--workdir must be outside the repository")
    missing = sorted({t for m in mutants for t in m.tests
                      if not (ROOT / t.split("::")[0]).exists()})
    if missing:
        parser.error(f"test selections that do not exist: {', '.join(missing)}")
    if args.check:
        stale = [m.id for m in mutants if (ROOT / m.file).read_text().count(m.old) != 1]
        print("stale:", ", ".join(stale) if stale else "none")
        return 1 if stale else 0
    tree = copy_tree(args.workdir)
    try:
        selections = sorted({t for m in mutants for t in m.tests})
        code, test = run_tests(tree, tuple(selections), args.timeout)
        if code != 0:
            print(f"the unmutated tree fails its tests ({test or code}): fix that first")
            return 2
        outcomes = []
        for mutant in mutants:
            outcome = run_mutant(tree, mutant, args.timeout)
            outcomes.append(outcome)
            print(f"{mutant.id} {outcome.result:8} {outcome.seconds:5.1f}s {mutant.file}:"
                  f"{outcome.line} {outcome.test}", flush=True)
    finally:
        shutil.rmtree(tree, ignore_errors=True)
    print()
    print(markdown(outcomes))
    if args.json:
        args.json.write_text(json.dumps([{"id": o.mutant.id, "file": o.mutant.file,
                                          "line": o.line, "why": o.mutant.why,
                                          "result": o.result, "test": o.test}
                                         for o in outcomes], indent=1))
    return 0 if all(o.result in ("killed", "equivalent") for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
