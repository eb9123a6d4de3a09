"""Pure parts: peer addresses, rate settings and windows, the pacing limiter, study order."""

from __future__ import annotations

from datetime import datetime
from datetime import time as dtime

import pytest

from tapearc.catalog.journal import StudyRef
from tapearc.dicomnet.peer import Peer, parse_peer
from tapearc.errors import UsageError
from tapearc.jobs.restore_plan import order_studies
from tapearc.support.limits import (
    Limits,
    RateLimiter,
    RateSetting,
    parse_setting,
    parse_window,
)


def test_parse_peer_forms() -> None:
    assert parse_peer("ORTHANC@pacs.example.org:104") == Peer("ORTHANC", "pacs.example.org", 104)
    p = parse_peer("MY PACS@[::1]:11112")
    assert (p.aet, p.host, p.port) == ("MY PACS", "::1", 11112)
    assert str(p) == "MY PACS@[::1]:11112"


@pytest.mark.parametrize(
    "text",
    ["", "PACS", "PACS@host", "@host:104", "PACS@host:0", "PACS@host:70000",
     "A" * 17 + "@h:104", "BAD\\AET@h:104", "PACS@host:port", "PACS@[zz]:104", "   @h:1"],
)
def test_parse_peer_rejects(text: str) -> None:
    with pytest.raises(UsageError):
        parse_peer(text)


def test_settings_and_windows() -> None:
    assert parse_setting("5MB/s,20/s,c2") == RateSetting(5.0, 20.0, 2)
    assert parse_setting("c3") == RateSetting(None, None, 3)
    assert parse_setting("unlimited") == RateSetting()
    for bad in ("5 GB/s", "c0", "-1/s", "0MB/s", "fast", "c33"):
        with pytest.raises(UsageError):
            parse_setting(bad)
    day = parse_window("07:00-19:00=5MB/s,c1")
    night = parse_window("22:00-06:00=c4")
    limits = Limits(default=RateSetting(mb_per_s=50), windows=(day, night))
    assert limits.at(datetime(2026, 1, 1, 12, 0)).mb_per_s == 5
    assert limits.at(datetime(2026, 1, 1, 23, 30)).concurrency == 4
    assert limits.at(datetime(2026, 1, 1, 3, 0)).concurrency == 4
    assert limits.at(datetime(2026, 1, 1, 20, 0)).mb_per_s == 50
    assert limits.at(datetime(2026, 1, 1, 19, 0)).mb_per_s == 50  # end is exclusive
    for bad in ("7-19=c1", "25:00-01:00=c1", "07:00-19:00"):
        with pytest.raises(UsageError):
            parse_window(bad)
    assert night.contains(dtime(0, 0)) and not night.contains(dtime(6, 0))


def test_backoff_doubles_to_cap() -> None:
    limits = Limits(backoff_s=0.5, backoff_max_s=3)
    assert [limits.backoff(n) for n in (1, 2, 3, 4, 5)] == [0.5, 1, 2, 3, 3]


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


def test_limiter_holds_both_budgets_and_follows_windows() -> None:
    clock = FakeClock()
    hour = [12]
    limits = Limits(
        default=RateSetting(mb_per_s=1.0, instances_per_s=4),
        windows=(parse_window("20:00-06:00=unlimited"),),
    )
    lim = RateLimiter(limits, clock=clock, sleep=clock.sleep,
                      wallclock=lambda: datetime(2026, 1, 1, hour[0]), burst_s=0)
    start = clock.t
    for _ in range(100):  # 100 x 0.1 MB = 10 MB at 1 MB/s -> 10 s; 100 at 4/s -> 25 s
        lim.acquire(100_000)
    assert clock.t - start == pytest.approx(24.75, abs=0.01)  # the instance budget binds
    start = clock.t
    for _ in range(10):  # 10 x 0.5 MB at 1 MB/s: 5 s, the byte budget binds
        lim.acquire(500_000)
    # the first waits for the last instance slot of the previous loop (0.25 s), each next one
    # for the 0.5 s debt of the one before
    assert clock.t - start == pytest.approx(0.25 + 9 * 0.5, abs=0.01)
    hour[0] = 23  # the night window: no waiting at all
    start = clock.t
    for _ in range(50):
        assert lim.acquire(10_000_000) == 0.0
    assert clock.t == start


def test_limiter_charges_before_sending_and_may_go_negative() -> None:
    """A piece larger than the credit goes at once; the next waits for the whole debt."""
    clock = FakeClock()
    lim = RateLimiter(Limits(default=RateSetting(mb_per_s=1.0)), clock=clock, sleep=clock.sleep,
                      burst_s=0.1)
    assert lim.acquire(3_000_000, instances=0) == 0.0  # 0.1 MB of credit: 2.9 MB of debt
    assert lim.acquire(1000, instances=0) == pytest.approx(2.9)
    clock.t += 100  # a long pause banks only burst_s of credit
    assert lim.acquire(100_000, instances=0) == 0.0  # the banked credit
    assert lim.acquire(100_000, instances=0) == 0.0  # out of credit, not yet in debt
    assert lim.acquire(100_000, instances=0) == pytest.approx(0.1)
    assert lim.seconds_for(5_000_000) == pytest.approx(5.0)


def test_limiter_holds_every_10s_window_within_10_percent() -> None:
    """Objects of up to a third of a 10 s budget, charged in socket-sized pieces by three
    threads' worth of interleaving: every 10 s window of a 120 s run is within 10 % of the
    limit (the Orthanc test checks the same on the wire)."""
    import random

    rate = 200_000.0
    clock = FakeClock()
    lim = RateLimiter(Limits(default=RateSetting(mb_per_s=rate / 1e6)), clock=clock,
                      sleep=clock.sleep)
    rng = random.Random(7)
    starts: list[tuple[float, int]] = []
    t0 = clock.t
    while clock.t - t0 < 120:
        size = rng.randint(1000, int(rate * 10 / 3))
        for off in range(0, size, RateLimiter.CHUNK):
            piece = min(RateLimiter.CHUNK, size - off)
            lim.acquire(piece, instances=0)
            starts.append((clock.t, piece))
    end = starts[-1][0]
    worst_hi = worst_lo = 1.0
    t = t0
    while t + 10 <= end:
        sent = sum(n for at, n in starts if t <= at < t + 10)
        worst_hi = max(worst_hi, sent / (rate * 10))
        worst_lo = min(worst_lo, sent / (rate * 10))
        t += 0.05
    assert worst_hi <= 1.1 and worst_lo >= 0.9, (worst_lo, worst_hi)


def _ref(uid: str, date: str | None, cart: str, pos: int) -> StudyRef:
    return StudyRef(uid, date, 1, cart, pos)


def test_order_groups_by_cartridge_newest_first() -> None:
    refs = [
        _ref("a", "20200101", "C1", 3), _ref("b", "20240505", "C2", 2),
        _ref("c", "20200102", "C1", 1), _ref("d", "20190101", "C2", 1),
        _ref("e", None, "C3", 1), _ref("f", "20230101", "C4", 9), _ref("g", "20230101", "C4", 4),
    ]
    assert [r.study_uid for r in order_studies(refs)] == ["d", "b", "g", "f", "c", "a", "e"]
    assert [r.study_uid for r in order_studies(refs, "oldest")] == [
        "d", "b", "c", "a", "g", "f", "e"]
    # each cartridge appears in one run
    carts = [r.cartridge for r in order_studies(refs)]
    assert carts == sorted(carts, key=carts.index)
    with pytest.raises(UsageError):
        order_studies(refs, "random")  # type: ignore[arg-type]


def test_fast_meta_parse_agrees_with_pydicom() -> None:
    """Every file in pydicom's test data: same identity as pydicom's reader, or both refuse."""
    from dataclasses import replace
    from pathlib import Path

    import pydicom.data

    from tapearc.dicomnet.fileinfo import _read_info_pydicom, read_info

    files = sorted((Path(pydicom.data.__file__).parent / "test_files").rglob("*"))
    compared = 0
    for f in (p for p in files if p.is_file()):
        try:
            slow = _read_info_pydicom(f, f.stat().st_size)
        except ValueError:
            slow = None
        try:
            fast = read_info(f)
        except ValueError:
            fast = None
        if slow is None:
            continue  # not Part-10 for pydicom either (no preamble, truncated, ...)
        assert fast is not None, f.name
        assert replace(fast, data_offset=-1) == replace(slow, data_offset=-1), f.name
        # where the data set starts: both agree when pydicom knows (from the group length),
        # and the fast parser's offset is where pydicom reads the data set from
        if slow.data_offset >= 0:
            assert fast.data_offset == slow.data_offset, f.name
        if fast.data_offset >= 0 and fast.data_offset < fast.size:
            with open(f, "rb") as fh:
                fh.seek(fast.data_offset)
                first = fh.read(2)
            group = int.from_bytes(first, "big" if fast.transfer_syntax ==
                                   "1.2.840.10008.1.2.2" else "little")
            assert group != 0x0002, (f.name, hex(group))  # past the file meta
        compared += 1
    assert compared > 100


def test_the_store_command_is_what_pydicom_decodes() -> None:
    from io import BytesIO

    from pydicom.filereader import read_dataset

    from tapearc.dicomnet.scu import parse_command, store_rq

    raw = store_rq(7, "1.2.840.10008.5.1.4.1.1.2", "1.2.3.45")
    ds = read_dataset(BytesIO(raw), is_implicit_VR=True, is_little_endian=True)
    assert ds.CommandField == 0x0001 and ds.MessageID == 7
    assert ds.AffectedSOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert ds.AffectedSOPInstanceUID == "1.2.3.45"
    assert ds.CommandGroupLength == len(raw) - 12
    assert ds.CommandDataSetType != 0x0101  # a data set follows
    assert parse_command(raw)[0x0110] == (7).to_bytes(2, "little")


def test_the_confirmation_query_is_what_pydicom_reads_and_writes() -> None:
    """The identifier tapearc builds is what pydicom decodes; a response pydicom encodes
    (with a sequence of undefined length before the keys) is read back by UID."""
    from io import BytesIO

    from pydicom.dataset import Dataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filereader import read_dataset
    from pydicom.filewriter import write_dataset
    from pydicom.sequence import Sequence

    from tapearc.dicomnet.holdings import (
        LEVEL,
        SERIES_UID,
        SOP_UID,
        STUDY_UID,
        find_rq,
        identifier,
        parse_dataset,
    )

    raw = identifier({LEVEL: "IMAGE", STUDY_UID: "1.2.3", SERIES_UID: "1.2.3.4", SOP_UID: ""})
    ds = read_dataset(BytesIO(raw), is_implicit_VR=True, is_little_endian=True)
    assert ds.QueryRetrieveLevel == "IMAGE" and ds.StudyInstanceUID == "1.2.3"
    assert ds.SeriesInstanceUID == "1.2.3.4" and ds.SOPInstanceUID == ""
    cmd = read_dataset(BytesIO(find_rq(3)), is_implicit_VR=True, is_little_endian=True)
    assert cmd.CommandField == 0x0020 and cmd.MessageID == 3

    answer = Dataset()
    item = Dataset()
    item.CodeValue = "X"
    answer.ProcedureCodeSequence = Sequence([item])
    answer.SOPInstanceUID = "1.2.3.4.5"
    answer.SeriesInstanceUID = "1.2.3.4"
    out = DicomBytesIO()
    out.is_implicit_VR = out.is_little_endian = True
    write_dataset(out, answer)
    encoded = out.getvalue()
    # pydicom writes defined lengths; make the sequence undefined as many PACS do
    seq_at = encoded.index(b"\x08\x00\x32\x10")
    n = int.from_bytes(encoded[seq_at + 4:seq_at + 8], "little")
    body = encoded[seq_at + 8:seq_at + 8 + n]
    undefined = (encoded[:seq_at + 4] + b"\xff\xff\xff\xff" + body
                 + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00" + encoded[seq_at + 8 + n:])
    found = parse_dataset(undefined)
    assert found[SOP_UID].rstrip(b"\0") == b"1.2.3.4.5"
    assert found[SERIES_UID].rstrip(b"\0") == b"1.2.3.4"
