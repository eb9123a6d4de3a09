"""A running recall desk for tests: a vtape site with archived, named studies, ``[serve]``
configured, ``tapearc serve`` running in a thread, and dcmtk's findscu/movescu/getscu."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tapearc.config import load_settings
from tapearc.jobs.nightly import run_nightly
from tapearc.jobs.serve import serve
from tapearc.support.process import Completed, run_tool
from tests.dicomnet.orthanc import free_port
from tests.jobs.site import Site, make_site
from tests.synth import SynthStudy, generate_studies

DESK_AET = "TAPEARC"
CLIENT_AET = "FINDSCU"
#: Names as a PACS stores them: mixed case, accents, given names or not.
NAMES = ("SMITH^JOHN", "Smithers^Anna", "SMITH", "Müller^Jürgen", "DOE^JANE", "O'NEIL^PAT")
BIRTH_DATES = ("19500101", "19610202", "19720303", "19830404", "19940505", "20050606")


@dataclass
class Desk:
    """The site, its studies (study ``i`` belongs to ``NAMES[i]``) and the running desk."""

    site: Site
    studies: list[SynthStudy]
    port: int
    client_port: int  # where the FINDSCU peer receives C-STORE (movescu, storescp)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> Desk:
        self.thread = threading.Thread(target=serve, args=(self.site.settings, self.stop),
                                       kwargs={"identities": [self.site.identity]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        raise RuntimeError("the recall desk did not start listening")

    def close(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=20)

    def restart(self) -> None:
        """Read the config again and start over (after a change to [serve])."""
        self.close()
        self.stop = threading.Event()
        self.site.settings = load_settings(self.site.config)
        self.start()

    def dcmtk(self, tool: str, *args: str, aet: str = CLIENT_AET,
              check: bool = True) -> Completed:
        """Run findscu/movescu/getscu against the desk (TCP_NODELAY as Orthanc's notes say)."""
        return run_tool([tool, "-aet", aet, "-aec", DESK_AET, *args, "127.0.0.1",
                         str(self.port)], timeout=120, check=check, env={"TCP_NODELAY": "1"})


def serve_config(port: int, client_port: int, extra: str = "") -> str:
    return (f'\n[serve]\naet = "{DESK_AET}"\nport = {port}\nrefresh_seconds = 1\n'
            f'[serve.peers.workstation]\naet = "{CLIENT_AET}"\naddress = "127.0.0.1"\n'
            f"port = {client_port}\n{extra}")


def make_desk(root: Path, *, n_studies: int = 6, instances: int = 3, extra: str = "") -> Desk:
    """A site whose studies are on A00001 and B00001 (both loaded: NEARLINE), and its desk
    configuration (not started)."""
    site = make_site(root)
    site.label("A00001", "A")
    site.label("B00001", "B")
    studies = named_studies(site, n_studies, instances)
    report = run_nightly(site.settings)
    assert report.exit_code == 0, report.as_json()
    return desk_for(site, studies, extra)


def named_studies(site: Site, n_studies: int, instances: int = 3) -> list[SynthStudy]:
    """Synthetic studies of the patients in ``NAMES`` in the site's PACS folder."""
    return generate_studies(site.pacs, n_studies, instances_per_study=instances,
                            series_per_study=2, pixel_bytes=4096, seed=3,
                            patient_names=NAMES, birth_dates=BIRTH_DATES)


def desk_for(site: Site, studies: list[SynthStudy], extra: str = "") -> Desk:
    """Add ``[serve]`` (free ports, the FINDSCU workstation as its peer) to a site's config."""
    port, client_port = free_port(), free_port()
    with site.config.open("a") as fh:
        fh.write(serve_config(port, client_port, extra))
    site.settings = load_settings(site.config)
    return Desk(site, studies, port, client_port)


def find_answers(out: Completed) -> list[dict[str, str]]:
    """findscu's ``-X``-less output as one dict per response identifier: keyword -> value
    (dcmtk prints ``(0010,0010) PN [SMITH^JOHN] #  10, 1 PatientName``)."""
    answers: list[dict[str, str]] = []
    for line in (out.stdout + out.stderr).splitlines():
        if "Find Response:" in line:
            answers.append({})
            continue
        if answers and line.startswith("I: (") and "#" in line:
            body, _, tail = line[3:].partition("#")
            keyword = tail.split()[-1]
            value = body.split(None, 2)[2].strip() if len(body.split(None, 2)) > 2 else ""
            if value.startswith("[") and "]" in value:
                value = value[1:value.rindex("]")].rstrip(" ")
            elif value.startswith("(no value"):
                value = ""
            answers[-1][keyword] = value
    return answers
