"""``tapearc keys`` and ``tapearc decrypt`` end to end, as real processes (exit codes included)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tapearc.format import keys
from tapearc.format.writer import ArchiveWriter
from tapearc.support.process import run_tool
from tests.support import need_tool

PASS = {"TAPEARC_PASSPHRASE": "s3cret pass"}


def tapearc(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run the CLI; ``env`` replaces the default TAPEARC_PASSPHRASE."""
    done = run_tool([sys.executable, "-m", "tapearc", *args], timeout=120, check=False,
                    env=PASS if env is None else env)  # fmt: skip
    return done.returncode, done.stdout, done.stderr


@pytest.fixture()
def site(tmp_path: Path) -> Path:
    """A config with a site and an escrow key (fast scrypt), the site key as identity, and a
    trusted signing key."""
    for name in ("site", "escrow"):
        keys.generate_keypair(tmp_path / "keys", name, PASS["TAPEARC_PASSPHRASE"], scrypt_log2n=10)
    keys.generate_signing_key(tmp_path / "keys", "sign-test", "sign pass", scrypt_log2n=10)
    config = tmp_path / "tapearc.toml"
    config.write_text(
        '[site]\nname = "test"\n[keys]\ndirectory = "keys"\n'
        'recipients = ["keys/site.pub", "keys/escrow.pub"]\nidentities = ["keys/site.key"]\n'
        'trusted_signers = ["keys/sign-test.pub"]\n'
    )
    return config


def signer_of(config: Path) -> keys.SigningKey:
    return keys.load_signing_key(config.parent / "keys" / "sign-test.key", "sign pass")


def write_archive(config: Path, out: Path, *, signed: bool = True) -> None:
    recipients = [keys.load_recipient(config.parent / "keys" / f"{n}.pub") for n in ("site", "escrow")]
    signer = signer_of(config) if signed else None
    with out.open("wb") as fh:
        writer = ArchiveWriter(fh.write, recipients, block_size=1 << 16, signer=signer)
        writer.add_bytes("1.2.3/1.2.3.4/1.2.3.4.5.dcm", b"DICM" * 50000, 1767225600)
        writer.add_bytes("1.2.3/1.2.3.4/1.2.3.4.6.dcm", b"x" * 10, 1767225600)
        writer.close()


def test_keys_generate_and_list(tmp_path: Path, site: Path) -> None:
    rc, out, err = tapearc("-c", str(site), "keys", "generate", "--name", "spare", "--json")
    assert rc == 0, err
    made = json.loads(out)
    assert (tmp_path / "keys" / "spare.key").stat().st_mode & 0o777 == 0o600
    rc, out, err = tapearc("-c", str(site), "keys", "list", "--json")
    assert rc == 0, err
    rows = {k["name"]: k for k in json.loads(out)["keys"]}
    assert set(rows) == {"site", "escrow", "spare", "sign-test"}
    assert rows["sign-test"]["type"] == "ed25519" and rows["sign-test"]["trusted_signer"]
    assert not rows["sign-test"]["recipient"] and rows["site"]["type"] == "x25519"
    assert rows["spare"]["key_id"] == made["key_id"] and rows["spare"]["archives"] is None
    assert rows["site"]["recipient"] and rows["site"]["identity"]
    assert rows["escrow"]["recipient"] and not rows["escrow"]["identity"]
    rc, out, _ = tapearc("-c", str(site), "keys", "list")
    assert rc == 0 and "escrow" in out and rows["site"]["key_id"] in out
    rc, out, err = tapearc("-c", str(site), "keys", "generate", "--signing", "--name",
                           "sign-2027", "--json")  # fmt: skip
    assert rc == 0, err
    assert json.loads(out)["type"] == "ed25519"
    assert (tmp_path / "keys" / "sign-2027.pub").read_text().startswith("tapearc-ed25519-v1 ")


def test_keys_list_counts_archives_when_a_catalog_exists(tmp_path: Path, site: Path) -> None:
    from tapearc.catalog.db import create_catalog

    create_catalog(tmp_path / "catalog.sqlite").close()
    rc, out, err = tapearc("-c", str(site), "keys", "list", "--json")
    assert rc == 0, err
    counts = {k["name"]: k["archives"] for k in json.loads(out)["keys"]}
    assert counts == {"site": 0, "escrow": 0, "sign-test": None}  # nothing is encrypted to it


def test_keys_list_flags_a_readable_private_key(tmp_path: Path, site: Path) -> None:
    (tmp_path / "keys" / "escrow.key").chmod(0o644)
    rc, out, _ = tapearc("-c", str(site), "keys", "list", "--json")
    problems = {k["name"]: k["problems"] for k in json.loads(out)["keys"]}
    assert rc == 0 and "chmod 600" in problems["escrow"][0] and problems["site"] == []


def test_generate_needs_a_passphrase(tmp_path: Path) -> None:
    rc, _, err = tapearc("keys", "generate", "--name", "x", "--dir", str(tmp_path),
                         env={"TAPEARC_PASSPHRASE": ""})  # fmt: skip
    assert rc == 2 and "empty passphrase" in err
    rc, _, err = tapearc("keys", "generate", "--name", "x", "--dir", str(tmp_path), env={})
    assert rc == 78 and "set TAPEARC_PASSPHRASE" in err  # stdin is not a terminal here
    assert not list(tmp_path.iterdir())


def test_decrypt_pipes_into_gnu_tar(tmp_path: Path, site: Path) -> None:
    need_tool("tar", "bash")
    write_archive(site, tmp_path / "a.data")
    pipeline = f"{sys.executable} -m tapearc -c {site} decrypt {tmp_path / 'a.data'} | tar tvf -"
    done = run_tool(["bash", "-o", "pipefail", "-c", pipeline], timeout=60, env=PASS)
    assert "1.2.3/1.2.3.4/1.2.3.4.5.dcm" in done.stdout and "200000" in done.stdout
    out = tmp_path / "x"
    out.mkdir()
    pipeline = f"{sys.executable} -m tapearc -c {site} decrypt < {tmp_path / 'a.data'} | tar xf - -C {out}"
    run_tool(["bash", "-o", "pipefail", "-c", pipeline], timeout=60, env=PASS)
    assert (out / "1.2.3/1.2.3.4/1.2.3.4.5.dcm").read_bytes() == b"DICM" * 50000
    pipeline = f"{sys.executable} -m tapearc -c {site} decrypt {tmp_path / 'a.data'} | head -c 10"
    done = run_tool(["bash", "-c", pipeline], timeout=60, env=PASS)
    assert done.stdout == "1.2.3/1.2." and "Traceback" not in done.stderr and "error" not in done.stderr


def test_decrypt_of_a_damaged_stream_exits_65(tmp_path: Path, site: Path) -> None:
    write_archive(site, tmp_path / "a.data")
    data = bytearray((tmp_path / "a.data").read_bytes())
    data[70000] ^= 0x10
    (tmp_path / "bad.data").write_bytes(data)
    rc, _, err = tapearc("-c", str(site), "decrypt", str(tmp_path / "bad.data"), "-o",
                         str(tmp_path / "out.tar"))  # fmt: skip
    assert rc == 65 and err.startswith("error: chunk 0 (block 1)") and "Traceback" not in err
    assert not (tmp_path / "out.tar").exists()  # no half-decrypted output is left behind
    (tmp_path / "short.data").write_bytes((tmp_path / "a.data").read_bytes()[: 3 * 65536])
    rc, _, err = tapearc("-c", str(site), "decrypt", str(tmp_path / "short.data"), "-o",
                         str(tmp_path / "out.tar"))  # fmt: skip
    assert rc == 65 and "truncated" in err
    data = bytearray((tmp_path / "a.data").read_bytes())
    data[20] ^= 0x01  # the archive uuid, in the header
    (tmp_path / "hdr.data").write_bytes(data)
    rc, _, err = tapearc("-c", str(site), "decrypt", str(tmp_path / "hdr.data"), "-o",
                         str(tmp_path / "out.tar"))  # fmt: skip
    assert rc == 65 and "header checksum mismatch" in err


def test_cli_modules_do_not_import_cryptography_at_start_up() -> None:
    code = "import sys, tapearc.cli; print(sorted(m for m in sys.modules if m.startswith('crypto')))"
    done = run_tool([sys.executable, "-c", code], timeout=60)
    assert done.stdout.strip() == "[]"


def test_decrypt_with_the_wrong_key_names_the_keys_needed(tmp_path: Path, site: Path) -> None:
    write_archive(site, tmp_path / "a.data")
    keys.generate_keypair(tmp_path / "other", "other", "pw", scrypt_log2n=10)
    rc, _, err = tapearc("-c", str(site), "decrypt", str(tmp_path / "a.data"), "-i",
                         str(tmp_path / "other" / "other.key"), "-o", str(tmp_path / "o"))  # fmt: skip
    site_id = keys.load_recipient(tmp_path / "keys" / "site.pub").key_id.hex()
    assert rc == 65 and "needs key id" in err and site_id in err


def test_decrypt_refuses_a_world_readable_key(tmp_path: Path, site: Path) -> None:
    write_archive(site, tmp_path / "a.data")
    (tmp_path / "keys" / "site.key").chmod(0o644)
    rc, _, err = tapearc("-c", str(site), "decrypt", str(tmp_path / "a.data"), "-o",
                         str(tmp_path / "o"))  # fmt: skip
    assert rc == 78 and "chmod 600" in err


def test_decrypt_with_the_wrong_passphrase_exits_65(tmp_path: Path, site: Path) -> None:
    write_archive(site, tmp_path / "a.data")
    rc, _, err = tapearc("-c", str(site), "decrypt", str(tmp_path / "a.data"), "-o",
                         str(tmp_path / "o"), env={"TAPEARC_PASSPHRASE": "nope"})  # fmt: skip
    assert rc == 65 and "wrong passphrase" in err


def test_decrypt_skips_the_drivers_framing_headers(tmp_path: Path, site: Path) -> None:
    from tapearc.drivers.layout import IndexHeader, data_header
    from tapearc.format.tae import Content
    from tapearc.format.writer import seal_bytes

    write_archive(site, tmp_path / "a.data")
    data = (tmp_path / "a.data").read_bytes()
    (tmp_path / "tape.data").write_bytes(data_header(1 << 16) + data)  # as `dd` reads a tape file
    rc, _, err = tapearc("-c", str(site), "decrypt", str(tmp_path / "tape.data"), "-o",
                         str(tmp_path / "a.tar"))  # fmt: skip
    assert rc == 0, err
    assert (tmp_path / "a.tar").read_bytes()[:27] == b"1.2.3/1.2.3.4/1.2.3.4.5.dcm"
    rcpt = keys.load_recipient(tmp_path / "keys" / "site.pub")
    index = seal_bytes(b'{"archive": 1}', [rcpt], 1 << 16, content=Content.INDEX,
                       signer=signer_of(site))
    header = IndexHeader.for_index(1, 0, 3, index)
    (tmp_path / "000001.index").write_bytes(header.to_bytes() + index)
    rc, _, err = tapearc("-c", str(site), "decrypt", str(tmp_path / "000001.index"), "-o",
                         str(tmp_path / "i.json"))  # fmt: skip
    assert rc == 0, err
    assert (tmp_path / "i.json").read_bytes() == b'{"archive": 1}'


def test_decrypt_refuses_what_no_trusted_key_signed(tmp_path: Path, site: Path) -> None:
    write_archive(site, tmp_path / "good.data")
    rc, _, err = tapearc("-c", str(site), "decrypt", str(tmp_path / "good.data"), "-o",
                         str(tmp_path / "good.tar"))  # fmt: skip
    assert rc == 0 and "signed by sign-test" in err
    # unsigned: refused before any passphrase is asked for (none is given here)
    write_archive(site, tmp_path / "plain.data", signed=False)
    rc, _, err = tapearc("-c", str(site), "decrypt", str(tmp_path / "plain.data"), "-o",
                         str(tmp_path / "o"), env={})  # fmt: skip
    assert rc == 65 and "not signed by this site" in err and "accept_unsigned" in err
    assert not (tmp_path / "o").exists()
    # break-glass: read, and said to be unsigned
    rc, _, err = tapearc("-c", str(site), "decrypt", "--accept-unsigned",
                         str(tmp_path / "plain.data"), "-o", str(tmp_path / "o"))  # fmt: skip
    assert rc == 0 and "UNSIGNED" in err
    # signed by a key of one's own, listed with --signer: trusted only because it is listed
    keys.generate_signing_key(tmp_path / "other", "mallory", "pw", scrypt_log2n=10)
    mallory = keys.load_signing_key(tmp_path / "other" / "mallory.key", "pw")
    recipients = [keys.load_recipient(tmp_path / "keys" / f"{n}.pub") for n in ("site", "escrow")]
    with (tmp_path / "forged.data").open("wb") as fh:
        writer = ArchiveWriter(fh.write, recipients, block_size=1 << 16, signer=mallory)
        writer.add_bytes("1.2.3/1.2.3.4/1.2.3.4.5.dcm", b"forged", 1767225600)
        writer.close()
    rc, _, err = tapearc("-c", str(site), "decrypt", str(tmp_path / "forged.data"), "-o",
                         str(tmp_path / "f"))  # fmt: skip
    assert rc == 65 and mallory.key_id.hex() in err and "not a trusted signing key" in err
    rc, _, err = tapearc("-c", str(site), "decrypt", "--signer",
                         str(tmp_path / "other" / "mallory.pub"), str(tmp_path / "forged.data"),
                         "-o", str(tmp_path / "f"))  # fmt: skip
    assert rc == 0 and "signed by mallory" in err
