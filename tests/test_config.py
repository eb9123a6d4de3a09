"""The configuration schema: every table, every driver's keys, the key files; every problem
stops every command at start with exit 78 and one line naming the key."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import typer.main

from tapearc.cli import app
from tapearc.config import load_settings, parse_settings
from tapearc.drivers.options import TapeOptions
from tapearc.errors import EXIT_CONFIG, ConfigError
from tapearc.support.units import parse_size
from tests.jobs.site import PASSPHRASE, make_site
from tests.support import run_cli

GOOD = """
[site]
name = "gh-1"
[ingest]
sources = ["pacs"]
[drives.d1]
driver = "vtape"
path = "vt"
[pools.A]
drive = "d1"
vault = "north"
"""

#: One table of each kind with its keys set, so that a test can misspell any of them.
FULL = GOOD + """
[keys]
directory = "keys"
[archive]
block_size = "1 MiB"
[verify]
after_write = "all"
[changer]
device = "/dev/sg7"
[rotation]
max_onsite_days = 7
[receiver]
bind = "127.0.0.1"
[recall]
group = "root"
[pacs]
address = "ORTHANC@pacs.example.org:104"
staging = "staging"
method = "move"
move_port = 11113
[reconcile]
lookback_days = 3
full_weekday = "saturday"
[drives.lto1]
driver = "tape"
device = "/dev/nst0"
[drives.usb]
driver = "disk"
path = "usb"
[drives.bd]
driver = "optical"
path = "discs"
[drives.lt]
driver = "ltfs"
device = "/dev/sg3"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "etc" / "tapearc.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def misspell(text: str, table: str, key: str) -> str:
    """``text`` with ``key`` of ``[table]`` renamed ``key`` + "x"."""
    head, sep, rest = text.partition(f"[{table}]\n")
    assert sep, table
    assert f"\n{key} =" in "\n" + rest.split("\n[", 1)[0], (table, key)
    return head + sep + rest.replace(f"{key} =", f"{key}x =", 1)


def test_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, GOOD))
    assert s.sources == [(tmp_path / "etc" / "pacs").resolve()]
    assert s.catalog_path == (tmp_path / "etc" / "catalog.sqlite").resolve()
    assert s.pools["A"].drive == "d1" and s.pools["A"].vault == "north"
    assert s.drives["d1"].driver == "vtape"
    assert s.drives["d1"].options.path == (tmp_path / "etc" / "vt").resolve()  # type: ignore[attr-defined]
    assert s.exclude == []
    s = load_settings(write(tmp_path, GOOD.replace(
        'sources = ["pacs"]', 'sources = ["pacs"]\nexclude = ["*.tmp", "DICOMDIR"]')))
    assert s.exclude == ["*.tmp", "DICOMDIR"]
    assert s.block_size == 1 << 20 and s.changer is None and s.rotation.max_onsite_days == 7


def test_every_table_is_read_into_typed_values(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, FULL))
    assert s.verify_mode == "all" and s.keys_dir == (tmp_path / "etc" / "keys").resolve()
    assert s.changer is not None and (s.changer.device, s.changer.mtx) == ("/dev/sg7", "mtx")
    lto = s.drives["lto1"]
    assert lto.driver == "tape" and isinstance(lto.options, TapeOptions)
    assert (lto.options.device, lto.options.timeout, lto.options.changer_drive) == ("/dev/nst0", 900.0, None)
    assert {d.driver for d in s.drives.values()} == {"vtape", "tape", "disk", "optical", "ltfs"}
    assert s.pacs is not None and s.pacs.staging == (tmp_path / "etc" / "staging").resolve()
    assert str(s.pacs.peer()) == "ORTHANC@pacs.example.org:104" and s.pacs.peer().tls is None
    assert (s.pacs.method, s.pacs.move_port, s.pacs.aet) == ("move", 11113, "TAPEARC")
    assert (s.reconcile.lookback_days, s.reconcile.full_weekday) == (3, "saturday")
    assert load_settings(write(tmp_path, GOOD)).pacs is None


def test_a_dicomweb_pacs_with_credentials_from_a_file_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tapearc.dicomnet.dicomweb import WebPeer

    secret = tmp_path / "etc" / "pacs.token"
    secret.parent.mkdir(parents=True, exist_ok=True)
    secret.write_text("tok\n")
    secret.chmod(0o600)
    s = load_settings(write(tmp_path, GOOD + '[pacs]\naddress = "https://pacs.example.org/dw/"\n'
                            'auth = "bearer"\nauth_file = "pacs.token"\ntls_ca = "ca.pem"\n'
                            'tls_verify = false\nstaging = "st"\n'))
    assert s.pacs is not None and s.pacs.auth_file == secret.resolve()
    peer = s.pacs.peer()
    assert isinstance(peer, WebPeer) and str(peer) == "https://pacs.example.org/dw"
    assert peer.credentials is not None and peer.credentials.header() == "Bearer tok"
    assert peer.tls.ca_file == (tmp_path / "etc" / "ca.pem").resolve() and not peer.tls.verify
    s = load_settings(write(tmp_path, GOOD + '[pacs]\naddress = "https://pacs.example.org/dw"\n'
                            'auth = "basic"\nauth_env = "PACS_AUTH"\n'))
    assert s.pacs is not None
    from tapearc.errors import ConfigError

    with pytest.raises(ConfigError, match="PACS_AUTH is not set"):
        s.pacs.peer()  # read when used: a changed secret is taken from the next run on
    monkeypatch.setenv("PACS_AUTH", "u:p")
    peer = s.pacs.peer()
    assert isinstance(peer, WebPeer) and peer.tls.verify and peer.tls.ca_file is None


@pytest.mark.parametrize(("table", "problem"), [
    ('[pacs]\naddress = "nonsense"\n', "pacs.address 'nonsense' is neither AET@HOST:PORT"),
    ('[pacs]\naddress = "https://u:p@h/dicom-web"\n', "carries credentials"),
    ('[pacs]\naddress = "https://h/dw"\nmethod = "move"\nmove_port = 1\n', "is DIMSE"),
    ('[pacs]\naddress = "P@h:104"\nauth = "basic"\nauth_env = "X"\n', "for a DICOMweb address"),
    ('[pacs]\naddress = "https://h/dw"\nauth = "bearer"\n', "exactly one of auth_file"),
    ('[pacs]\naddress = "https://h/dw"\nauth_env = "X"\n', "without auth"),
    ('[pacs]\naddress = "https://h/dw"\nauth = "token"\nauth_env = "X"\n', "pacs.auth"),
    ('[pacs]\naddress = "P@h:104"\nmethod = "move"\n', "pacs.move_port is missing"),
    ('[pacs]\naddress = "P@h:104"\naet = "A\\\\B"\n', "pacs.aet"),
    ('[pacs]\nstaging = "st"\n', "pacs.address is missing"),
    ('[reconcile]\nfull_weekday = "funday"\n', "reconcile.full_weekday"),
    ('[reconcile]\nlookback_days = -1\n', "reconcile.lookback_days"),
])
def test_pacs_and_reconcile_tables_are_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], table: str, problem: str
) -> None:
    assert problem in cli_error(write(tmp_path, GOOD + table), capsys)


# --- through the real command line ------------------------------------------------------------


def cli_error(config: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run ``tapearc --config CONFIG ARGV``; it must exit 78 with one line on stderr."""
    code, _, err = run_cli(["--config", str(config), *(argv or ("status",))], capsys)
    assert code == EXIT_CONFIG, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(("table", "key"), [
    ("site", "name"), ("ingest", "sources"), ("keys", "directory"), ("archive", "block_size"),
    ("verify", "after_write"), ("changer", "device"), ("rotation", "max_onsite_days"),
    ("receiver", "bind"), ("recall", "group"), ("pacs", "staging"),
    ("reconcile", "lookback_days"), ("pools.A", "vault"), ("drives.d1", "path"),
    ("drives.lto1", "device"),
    ("drives.usb", "path"), ("drives.bd", "path"), ("drives.lt", "device"),
])
def test_a_misspelt_key_in_any_table_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], table: str, key: str
) -> None:
    err = cli_error(write(tmp_path, misspell(FULL, table, key)), capsys)
    # a misspelt required key is reported missing first, so accept either naming
    assert f"{table}.{key}x is not a known key" in err or f"{table}.{key} is missing" in err, err


def test_an_unknown_table_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = cli_error(write(tmp_path, FULL + "[archiv]\nbuffer = 1\n"), capsys)
    assert "[archiv] is not a tapearc table" in err


@pytest.mark.parametrize(("table", "key"), [
    ("pools.A", "vualt"), ("drives.d1", "capacity_"), ("drives.lto1", "devcie"),
    ("drives.usb", "singel"), ("drives.bd", "burner"), ("drives.lt", "mountpiont"),
])
def test_an_unknown_key_lists_the_keys_of_its_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], table: str, key: str
) -> None:
    text = FULL.replace(f"[{table}]\n", f"[{table}]\n{key} = \"x\"\n")
    err = cli_error(write(tmp_path, text), capsys)
    assert f"{table}.{key} is not a known key ([{table}] takes: driver" in err or \
        f"{table}.{key} is not a known key ([{table}] takes: drive," in err, err


@pytest.mark.parametrize(("table", "line", "key"), [
    ("drives.lto1", "timeout = \"soon\"", "drives.lto1.timeout"),
    ("drives.lto1", "timeout = 0", "drives.lto1.timeout"),
    ("drives.lto1", "changer_drive = -1", "drives.lto1.changer_drive"),
    ("drives.d1", "capacity = \"lots\"", "drives.d1.capacity"),
    ("drives.d1", "early_warning = \"2 GiB\"", "drives.d1.early_warning"),
    ("drives.usb", "single = \"yes\"", "drives.usb.single"),
    ("drives.bd", "writer = \"growisofs\"", "drives.bd.writer"),
    ("drives.bd", "media = \"BD-X\"", "drives.bd.media"),
    ("drives.bd", "device = \"/dev/sr0\"", "drives.bd.device"),  # and path: one or the other
    ("drives.lt", "mount_options = \"sync_type=unmount\"", "drives.lt.mount_options"),
    ("drives.lt", "unmount_timeout = -5", "drives.lt.unmount_timeout"),
])
def test_a_bad_drive_key_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], table: str, line: str, key: str
) -> None:
    err = cli_error(write(tmp_path, FULL.replace(f"[{table}]\n", f"[{table}]\n{line}\n")), capsys)
    assert key in err, err


def test_a_bad_driver_name_lists_the_drivers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = cli_error(write(tmp_path, FULL.replace('driver = "tape"', 'driver = "tpae"')), capsys)
    assert "drives.lto1.driver" in err and "use one of: tape, vtape, disk, optical, ltfs" in err


@pytest.mark.parametrize(("text", "key"), [
    (FULL.replace('device = "/dev/sg7"', "device = 7"), "changer.device"),
    (FULL.replace('device = "/dev/sg7"', 'device = ""'), "changer.device"),
    (FULL.replace('device = "/dev/sg7"', 'mtx = "mtx"'), "changer.device is missing"),
    (FULL.replace('device = "/dev/sg7"', 'device = "/dev/sg7"\nmtx = ["mtx"]'), "changer.mtx"),
])
def test_a_bad_changer_value_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, key: str
) -> None:
    assert key in cli_error(write(tmp_path, text), capsys)


@pytest.mark.parametrize(("line", "key"), [
    ('port = 0', "receiver.port"),
    ('aet = "A_TITLE_FAR_TOO_LONG"', "receiver.aet"),
    ('max_object_size = "huge"', "receiver.max_object_size"),
    ('allow = "PACS@10.0.0.1"', "receiver.allow"),
])
def test_a_bad_receiver_value_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str, key: str
) -> None:
    text = FULL.replace('bind = "127.0.0.1"\n', f'bind = "127.0.0.1"\n{line}\n')
    assert key in cli_error(write(tmp_path, text), capsys)


def test_an_unknown_recall_group_is_named(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    text = FULL.replace('group = "root"', 'group = "no-such-group-here"')
    assert "recall.group 'no-such-group-here' does not exist" in cli_error(write(tmp_path, text),
                                                                            capsys)


def test_receiver_table_is_read(tmp_path: Path) -> None:
    text = FULL.replace('bind = "127.0.0.1"\n', 'bind = "127.0.0.1"\nstaging = "staging"\n'
                        'allow = ["PACS@10.1.2.3"]\nmax_object_size = "1 GiB"\n')
    s = load_settings(write(tmp_path, text), check_keys=False)
    assert s.receiver.staging == (tmp_path / "etc" / "staging").resolve()
    assert s.receiver.allow == ["PACS@10.1.2.3"] and s.receiver.max_object_size == 1 << 30
    assert s.recall_group == "root"


@pytest.mark.parametrize(("line", "key"), [
    ('max_onsite_days = "7"', "rotation.max_onsite_days"),
    ("max_onsite_days = -1", "rotation.max_onsite_days"),
    ("max_onsite_days = 0", "rotation.max_onsite_days"),
    ("transit_days = nan", "rotation.transit_days"),
    ("transit_days = inf", "rotation.transit_days"),
    ('bring_back = "recall"', "rotation.bring_back"),
    ('bring_back = ["recal"]', "rotation.bring_back[0]"),
    ('ship_after_verify = "yes"', "rotation.ship_after_verify"),
    ("exposure_limit_days = 8", "rotation.exposure_limit_days"),
])
def test_a_bad_rotation_value_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str, key: str
) -> None:
    text = FULL.replace("max_onsite_days = 7\n", line + "\n")
    assert key in cli_error(write(tmp_path, text), capsys)


@pytest.mark.parametrize(("text", "key"), [
    (GOOD.replace('name = "gh-1"', ""), "site.name is missing"),
    (GOOD.replace('name = "gh-1"', 'name = "Mr Smith\'s ward"'), "site.name"),
    (GOOD.replace('drive = "d1"', 'drive = "nope"'), "pools.A.drive"),
    (GOOD.replace('driver = "vtape"', ""), "drives.d1.driver is missing"),
    (GOOD + '[archive]\nblock_size = "3 MiB"\n', "archive.block_size"),
    (GOOD + '[archive]\nread_rate = "fast"\n', "archive.read_rate"),
    (GOOD + '[archive]\nbuffer = true\n', "archive.buffer"),
    (GOOD + '[verify]\nafter_write = "maybe"\n', "verify.after_write"),
    (GOOD + '[verify]\nsample = -1\n', "verify.sample"),
    (GOOD.replace('sources = ["pacs"]', "sources = 3"), "ingest.sources"),
    (GOOD.replace('sources = ["pacs"]', 'sources = ["pacs", ""]'), "ingest.sources[1]"),
    (GOOD.replace('sources = ["pacs"]', "quiet_seconds = -1"), "ingest.quiet_seconds"),
    (GOOD.replace('sources = ["pacs"]', 'exclude = "*.tmp"'), "ingest.exclude"),
    (GOOD.replace('sources = ["pacs"]', 'exclude = ["*.tmp", ""]'), "ingest.exclude[1]"),
    (GOOD + '[keys]\nrecipients = "keys/site.pub"\n', "keys.recipients"),
    (GOOD + "[pools.B]\ndrive = \"d1\"\nvault = \"north\"\n", "pools.A.vault and pools.B.vault"),
    (GOOD + "[pools.'B B']\ndrive = \"d1\"\n", "pools.B B"),
    (GOOD + "drives = 3\n", "pools.A.drives"),  # TOML: the key lands in the table above it
    ("site = 3\n", "site"),
])
def test_bad_values_name_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, key: str
) -> None:
    assert key in cli_error(write(tmp_path, text), capsys)


def test_missing_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tapearc init"):
        load_settings(tmp_path / "absent.toml")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_settings(write(tmp_path, "[site\nname="))


# --- key files ---------------------------------------------------------------------------------


def test_a_missing_recipient_key_file_stops_every_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    site = make_site(tmp_path / "site")
    monkeypatch.setenv("TAPEARC_PASSPHRASE", PASSPHRASE)
    (site.root / "keys" / "escrow.pub").unlink()
    for argv in (["status"], ["find"], ["write"], ["nightly"]):
        err = cli_error(site.config, capsys, *argv)
        assert "keys.recipients" in err and "escrow.pub" in err and "does not exist" in err
    # key management is how the files come back: it reports the problem instead
    code, out, _ = run_cli(["--config", str(site.config), "keys", "list", "--json"], capsys)
    assert code == 0 and "escrow.pub" in out


def test_a_recipient_file_that_is_not_a_public_key_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = make_site(tmp_path / "site")
    (site.root / "keys" / "escrow.pub").write_text("not a key\n")
    err = cli_error(site.config, capsys, "find")
    assert "keys.recipients" in err and "escrow.pub" in err


def test_a_missing_identity_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = make_site(tmp_path / "site")
    (site.root / "keys" / "site.key").unlink()
    err = cli_error(site.config, capsys, "status")
    assert "keys.identities" in err and "site.key" in err


# --- every command checks at start -------------------------------------------------------------

#: Arguments that get each command past its own parsing; the config is what must stop it.
ARGV: dict[str, list[str]] = {
    "ingest": [], "write": [], "nightly": [], "backlog": [], "find": [], "status": [],
    "drives": [],
    "recall": ["1.2.3", "--to", "out"], "verify": ["A00001"], "decrypt": ["-"],
    "restore": ["--to-pacs", "PACS@127.0.0.1:104", "--all"],
    "migrate": ["--to-pacs", "PACS@127.0.0.1:104", "--report", "report.json"],
    "cartridge label": ["A00001", "--pool", "A"], "cartridge list": [],
    "cartridge show": ["A00001"], "cartridge load": ["A00001"], "cartridge eject": ["d1"],
    "cartridge close": ["A00001"], "cartridge retire": ["A00001"],
    "cartridge move": ["A00001", "onsite"],
    "catalog backup": [], "catalog rebuild": [], "catalog check": [],
    "keys generate": ["--name", "extra"], "keys list": [], "keys verify": [],
    "rotation plan": [], "rotation ship": [], "rotation receive": [],
    "receive": [],
    "reconcile": ["--pacs", "PACS@127.0.0.1:104"],
    "pull": ["--from", "PACS@127.0.0.1:104", "--staging", "st"],
    "stream": ["--once"],
    "serve": [], "requests run": [],
}
#: Commands that never read the configuration.
WITHOUT_CONFIG = {"init"}


def _commands() -> list[str]:
    def walk(cmd: object, path: tuple[str, ...]) -> list[str]:
        subs = getattr(cmd, "commands", None)
        if subs is None:
            return [" ".join(path)]
        return [name for key, sub in subs.items() for name in walk(sub, (*path, key))]

    return walk(typer.main.get_command(app), ())


def test_every_command_is_listed_here() -> None:
    assert set(_commands()) == set(ARGV) | WITHOUT_CONFIG


@pytest.mark.parametrize("command", sorted(ARGV))
def test_every_command_checks_the_config_before_it_works(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TAPEARC_PASSPHRASE", PASSPHRASE)
    config = write(tmp_path, misspell(FULL, "drives.lto1", "device"))
    err = cli_error(config, capsys, *command.split(), *ARGV[command])
    assert "drives.lto1.devicex is not a known key" in err
    assert not (tmp_path / "etc" / "catalog.sqlite").exists()  # nothing was done
    assert not (tmp_path / "etc" / "keys").exists()


def test_sizes() -> None:
    assert parse_size("1 MiB") == 1 << 20
    assert parse_size("2GB") == 2 * 10**9
    assert parse_size(512) == 512
    for bad in ("-1", "1 XB", True, -5, 1.5, None):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_parse_without_file_uses_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = parse_settings(tomllib.loads(GOOD), None)
    assert s.base_dir == tmp_path.resolve()
    assert s.sources == [tmp_path.resolve() / "pacs"]
