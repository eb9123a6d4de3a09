"""The DICOMweb client layer: multipart streaming, credentials, addresses, and STOW-RS,
QIDO-RS and WADO-RS against Orthanc's DICOMweb plugin over HTTPS with a test CA."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tapearc.dicomnet.dicomweb import (
    MultipartSplitter,
    WebPeer,
    load_credentials,
    multipart_body,
    parse_web_peer,
)
from tapearc.dicomnet.peer import TlsOptions
from tapearc.errors import ConfigError, PeerRefused, UsageError
from tests.dicomnet.orthanc import Orthanc

# --------------------------------------------------------------------------- multipart


def split(body: bytes, boundary: str, cuts: list[int]) -> list[bytes]:
    """The parts of ``body`` fed in pieces cut at ``cuts``."""
    parts: list[bytes] = []

    class Part(io.BytesIO):
        pass

    def done(fh: Any) -> None:
        parts.append(fh.getvalue())

    splitter = MultipartSplitter(boundary, Part, done)
    pos = 0
    for cut in [*sorted(set(cuts)), len(body)]:
        splitter.feed(body[pos:cut])
        pos = max(pos, cut)
    splitter.close()
    return parts


@settings(max_examples=60, deadline=None)
@given(contents=st.lists(st.binary(max_size=300), min_size=1, max_size=5),
       cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=12))
def test_what_the_body_streams_splits_back_into_the_same_files(
        tmp_path_factory: pytest.TempPathFactory, contents: list[bytes], cuts: list[int]) -> None:
    folder = tmp_path_factory.mktemp("mp")
    files: list[tuple[Path, int, bytes | None]] = []
    for n, data in enumerate(contents):
        path = folder / f"f{n}"
        if n % 2:  # held in memory (the restore's reader keeps small studies so)
            files.append((path, len(data), data))
            continue
        path.write_bytes(data)
        files.append((path, len(data), None))
    boundary = "b0undary"
    generate, length = multipart_body(files, boundary)
    body = b"".join(generate())
    assert len(body) == length
    assert split(body, boundary, cuts) == contents


def test_splitter_reads_a_preamble_headers_and_padding() -> None:
    body = (b"preamble\r\n--xx  \r\nContent-Type: application/dicom\r\nX: y\r\n\r\nONE\r\n"
            b"--xx\r\n\r\nTWO--xx\r\n--xx--\r\nepilogue")
    assert split(body, "xx", [5, 17, 30]) == [b"ONE", b"TWO--xx"]


def test_a_body_cut_short_is_an_error() -> None:
    with pytest.raises(ValueError, match="before its closing delimiter"):
        split(b"--xx\r\n\r\npartial data", "xx", [])


def test_a_file_that_changes_size_breaks_the_promised_length(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"1234")
    generate, _ = multipart_body([(path, 4, None)], "b")
    gen = generate()
    next(gen)
    path.write_bytes(b"123456")
    with pytest.raises(Exception, match="changed size"):
        list(gen)


# --------------------------------------------------------------------------- credentials


def test_credentials_come_from_a_private_file_or_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = tmp_path / "token"
    token.write_text("s3cr3t-token\n")
    token.chmod(0o644)
    with pytest.raises(ConfigError, match="can be read or changed by others"):
        load_credentials("bearer", file=token)
    token.chmod(0o600)
    creds = load_credentials("bearer", file=token)
    assert creds is not None and creds.header() == "Bearer s3cr3t-token"
    assert "s3cr3t" not in repr(creds) and creds.source == f"file {token}"

    with pytest.raises(ConfigError, match="environment variable PACS_AUTH is not set"):
        load_credentials("basic", env="PACS_AUTH")
    monkeypatch.setenv("PACS_AUTH", "nocolon")
    with pytest.raises(ConfigError, match="not user:password"):
        load_credentials("basic", env="PACS_AUTH")
    monkeypatch.setenv("PACS_AUTH", "user:pw")
    basic = load_credentials("basic", env="PACS_AUTH")
    assert basic is not None and basic.header() == "Basic dXNlcjpwdw=="
    with pytest.raises(ConfigError, match="exactly one source"):
        load_credentials("basic", env="PACS_AUTH", file=token)
    with pytest.raises(ConfigError, match="without the auth kind"):
        load_credentials(None, env="PACS_AUTH")


def test_an_address_never_carries_credentials() -> None:
    with pytest.raises(UsageError, match="carries credentials"):
        parse_web_peer("https://user:pw@pacs.example.org/dicom-web")
    with pytest.raises(UsageError, match="cannot read"):
        parse_web_peer("ftp://pacs.example.org/")
    peer = parse_web_peer("https://pacs.example.org:8443/dicom-web/")
    assert str(peer) == "https://pacs.example.org:8443/dicom-web" and peer.tls.verify


def test_credentials_never_cross_the_network_in_clear(tmp_path: Path) -> None:
    secret = tmp_path / "s"
    secret.write_text("u:p")
    secret.chmod(0o600)
    creds = load_credentials("basic", file=secret)
    with pytest.raises(ConfigError, match="in clear"):
        parse_web_peer("http://pacs.example.org/dicom-web", credentials=creds)
    assert parse_web_peer("http://127.0.0.1:8042/dicom-web", credentials=creds)


# --------------------------------------------------------------------------- against Orthanc


def test_stow_qido_wado_round_trip(web_orthanc: Orthanc, web_peer: WebPeer,
                                   synth_studies: Path, tmp_path: Path) -> None:
    from tapearc.dicomnet.inventory import PacsInventory
    from tapearc.dicomnet.pull import Wanted
    from tapearc.dicomnet.qido import WebQueryClient
    from tapearc.dicomnet.stow import StowSender
    from tapearc.dicomnet.wado import retrieve_web

    studies = sorted(p for p in synth_studies.iterdir() if p.is_dir())[:3]
    files = sorted(f for s in studies for f in s.rglob("*.dcm"))
    with StowSender(web_peer, max_instances=4) as sender:
        result = sender.send(files)
    assert len(result.stored) == len(files) and not result.refused and not result.failed
    assert web_orthanc.statistics()["CountInstances"] == len(files)

    with WebQueryClient(web_peer) as client:
        for study in studies:
            sops = {f.stem for f in study.rglob("*.dcm")}
            assert client.study_sop_uids(study.name) == sops
            assert client.study_instance_count(study.name) == len(sops)
        assert client.study_sop_uids("1.2.3.4") == set()
        inventory = PacsInventory(client)
        inventory.sweep((None, None))
        inventory.sweep_undated()
        assert set(inventory.studies) == {s.name for s in studies}
        inventory.list_studies(list(inventory.studies))
        for study in studies:
            listed = inventory.studies[study.name].listed
            assert {sop for sops in listed.values() for sop in sops} == \
                {f.stem for f in study.rglob("*.dcm")}

    one = studies[0]
    some = sorted(one.rglob("*.dcm"))
    series = some[0].parent.name
    wanted = [Wanted(studies[1].name, None),
              Wanted(one.name, 1, {series: frozenset({some[0].stem})})]
    report = retrieve_web(web_peer, tmp_path / "staging", wanted)
    assert report.ok, report.to_dict()
    got = {p.stem: p for p in (tmp_path / "staging").rglob("*.dcm")}
    assert set(got) == {f.stem for f in studies[1].rglob("*.dcm")} | {some[0].stem}
    from pydicom import dcmread

    original = dcmread(some[0])
    back = dcmread(got[some[0].stem])
    assert back.PixelData == original.PixelData and back.StudyInstanceUID == one.name


def test_wrong_credentials_are_refused_naming_the_status(
        web_orthanc: Orthanc, synth_studies: Path, tmp_path: Path) -> None:
    from tapearc.dicomnet.qido import WebQueryClient
    from tapearc.dicomnet.stow import StowSender

    secret = tmp_path / "wrong"
    secret.write_text("tapearc:not-the-password")
    secret.chmod(0o600)
    peer = parse_web_peer(web_orthanc.dicomweb_url, tls=TlsOptions(ca_file=web_orthanc.ca),
                          credentials=load_credentials("basic", file=secret))
    files = sorted(synth_studies.rglob("*.dcm"))[:3]
    with StowSender(peer) as sender, pytest.raises(PeerRefused) as err:
        sender.send(files)
    assert "HTTP 401 Unauthorized" in str(err.value) and err.value.exit_code == 1
    assert "not-the-password" not in str(err.value) and str(secret) in str(err.value)
    with WebQueryClient(peer) as client, pytest.raises(PeerRefused, match="HTTP 401"):
        client.study_sop_uids("1.2.3")
    assert web_orthanc.statistics()["CountInstances"] == 0


def test_an_untrusted_certificate_is_refused(web_orthanc: Orthanc, web_peer: WebPeer,
                                              synth_studies: Path, tmp_path: Path) -> None:
    from dataclasses import replace

    from tapearc.dicomnet.qido import WebQueryClient
    from tapearc.dicomnet.stow import StowSender
    from tests.dicomnet.tlsca import make_pki

    other_ca, _ = make_pki(tmp_path / "other", ())
    for tls in (TlsOptions(), TlsOptions(ca_file=other_ca)):
        peer = replace(web_peer, tls=tls)
        with WebQueryClient(peer) as client, pytest.raises(PeerRefused) as err:
            client.study_sop_uids("1.2.3")
        assert "refused the certificate" in str(err.value) and err.value.exit_code == 1
        with StowSender(peer) as sender, pytest.raises(PeerRefused):
            sender.send(sorted(synth_studies.rglob("*.dcm"))[:2])
    # a certificate for another name is refused as well: 'localhost' is in it, this is not
    peer = replace(web_peer, tls=TlsOptions(ca_file=web_orthanc.ca, server_name="pacs.invalid"))
    with WebQueryClient(peer) as client, pytest.raises(PeerRefused, match="certificate"):
        client.study_sop_uids("1.2.3")
    assert web_orthanc.statistics()["CountInstances"] == 0
    # and only an explicit choice turns the checks off
    unchecked = replace(web_peer, tls=TlsOptions(verify=False))
    with WebQueryClient(unchecked) as client:
        assert client.study_sop_uids("1.2.3") == set()


def test_a_refused_instance_is_reported_with_the_others_stored(
        web_orthanc: Orthanc, web_peer: WebPeer, synth_studies: Path, tmp_path: Path) -> None:
    from tapearc.dicomnet.stow import StowSender

    files = sorted(synth_studies.rglob("*.dcm"))[:3]
    # a Part-10 file whose data set Orthanc cannot parse: the header is fine, the rest is not
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(files[0].read_bytes()[:400] + os.urandom(64))
    from tapearc.dicomnet.fileinfo import read_info

    infos = [read_info(f) for f in files]
    with StowSender(web_peer) as sender:
        good = sender.send_infos(infos)
        worse = sender.send_infos([read_info(bad)])
    assert len(good.stored) == 3
    assert not worse.stored and [f.sop_instance for f in worse.refused] == [infos[0].sop_instance]
    assert "refused by the PACS (HTTP" in worse.refused[0].reason
    assert web_orthanc.statistics()["CountInstances"] == 3


# --------------------------------------------------------------------------- a scripted server


class Scripted:
    """A plain-HTTP server on loopback that answers from a script of (status, headers, body)
    and records each request's Authorization header and body length."""

    def __init__(self, script: list[tuple[int, dict[str, str], bytes]]) -> None:
        import http.server
        import threading

        self.script = script
        self.seen: list[tuple[str | None, int]] = []
        self.paths: list[str] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                got = len(self.rfile.read(length))
                outer.seen.append((self.headers.get("Authorization"), got))
                status, headers, body = outer.script.pop(0) if outer.script else (500, {}, b"")
                self.send_response(status)
                for k, v in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                outer.paths.append(self.path)
                self.do_POST()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/dicom-web"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def stow_answer(uids: list[str]) -> bytes:
    import json

    return json.dumps({"00081199": {"vr": "SQ", "Value": [
        {"00081155": {"vr": "UI", "Value": [u]}} for u in uids]}}).encode()


def test_busy_answers_are_retried_with_the_bearer_token(
        netns: None, synth_studies: Path, tmp_path: Path) -> None:
    from tapearc.dicomnet.fileinfo import read_info
    from tapearc.dicomnet.sender import SendInterrupted
    from tapearc.dicomnet.stow import StowSender
    from tapearc.support.limits import Limits

    token = tmp_path / "token"
    token.write_text("tok-123")
    token.chmod(0o600)
    infos = [read_info(f) for f in sorted(synth_studies.rglob("*.dcm"))[:2]]
    server = Scripted([(503, {"Retry-After": "0"}, b""),
                       (200, {"Content-Type": "application/dicom+json"},
                        stow_answer([i.sop_instance for i in infos]))])
    waits: list[float] = []
    try:
        peer = parse_web_peer(server.url, credentials=load_credentials("bearer", file=token))
        with StowSender(peer, limits=Limits(backoff_s=0.01), sleep=waits.append) as sender:
            result = sender.send_infos(infos)
        assert sorted(result.stored) == sorted(i.sop_instance for i in infos)
        assert result.retries == 1 and waits == [0.01]
        body = sum(i.size for i in infos)
        assert [a for a, _ in server.seen] == ["Bearer tok-123"] * 2
        assert all(n > body for _, n in server.seen)  # the whole batch, twice

        server.script = [(503, {}, b"")] * 3
        with StowSender(peer, limits=Limits(max_attempts=3, backoff_s=0),
                        sleep=waits.append) as sender, pytest.raises(SendInterrupted) as err:
            sender.send_infos(infos)
        assert "HTTP 503" in str(err.value) and err.value.result.stored == []
        assert {f.reason for f in err.value.result.failed} == {str(err.value.__cause__)}
    finally:
        server.close()


def test_qido_keys_go_into_the_path_and_the_query() -> None:
    from tapearc.dicomnet.qido import query_for

    assert query_for("IMAGE", {"QueryRetrieveLevel": "IMAGE", "StudyInstanceUID": "1.2",
                               "SeriesInstanceUID": "3.4", "SOPInstanceUID": ""}) == \
        ("/studies/1.2/series/3.4/instances", {"includefield": "00080018"})
    assert query_for("STUDY", {"StudyInstanceUID": ["1.2", "1.3"], "StudyDate": "20240101-",
                               "NumberOfStudyRelatedInstances": ""}) == \
        ("/studies", {"StudyInstanceUID": "1.2,1.3", "StudyDate": "20240101-",
                      "includefield": "00201208"})
    # a list of studies cannot go into the path: the instances of all studies, matched
    assert query_for("IMAGE", {"StudyInstanceUID": ["1.2", "1.3"], "SOPInstanceUID": ""})[0] \
        == "/instances"
    assert query_for("SERIES", {"StudyInstanceUID": "1.2", "SeriesInstanceUID": ""}) == \
        ("/studies/1.2/series", {"includefield": "0020000E"})


def test_qido_pages_until_a_short_page_without_a_warning(
        netns: None, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from tapearc.dicomnet import qido

    def page(uids: list[str]) -> bytes:
        return json.dumps([{"00080018": {"vr": "UI", "Value": [u]}} for u in uids]).encode()

    dicom_json = {"Content-Type": "application/dicom+json"}
    monkeypatch.setattr(qido, "PAGE", 2)
    server = Scripted([(200, dicom_json, page(["1", "2"])),
                       (200, {**dicom_json, "Warning": "299 tapearc: results capped"},
                        page(["3"])),
                       (200, dicom_json, page(["4"])),
                       (200, dicom_json, page(["5", "6", "7"]))])
    try:
        with qido.WebQueryClient(parse_web_peer(server.url)) as client:
            assert client.study_sop_uids("9.9") == {"1", "2", "3", "4"}
            # a server that ignores limit answers everything at once: one request
            assert client.study_sop_uids("9.8") == {"5", "6", "7"}
        offsets = [p.split("offset=")[1] for p in server.paths]
        assert offsets == ["0", "2", "3", "0"]
        assert all(p.startswith("/dicom-web/studies/9.") for p in server.paths)
    finally:
        server.close()
