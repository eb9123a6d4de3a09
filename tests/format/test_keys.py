"""Key files: generation, permissions, passphrases, and the public-key format."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tapearc.errors import EXIT_DATAERR, ConfigError, IntegrityError, UsageError, WrongKeyError
from tapearc.format import keys
from tapearc.format.reader import open_bytes
from tapearc.format.writer import seal_bytes
from tests.format.helpers import UNSIGNED_OK

FAST_SCRYPT = 10  # production default is 17; the file records which one was used


def make(tmp_path: Path, name: str = "site", passphrase: str = "correct horse") -> keys.Recipient:
    return keys.generate_keypair(tmp_path, name, passphrase, scrypt_log2n=FAST_SCRYPT)


def test_generate_writes_both_files_with_safe_modes(tmp_path: Path) -> None:
    os.umask(0o022)
    rcpt = make(tmp_path)
    assert (tmp_path / "site.key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "site.pub").stat().st_mode & 0o777 == 0o644
    assert keys.load_recipient(tmp_path / "site.pub") == rcpt
    assert keys.load_recipient(tmp_path / "site.key") == rcpt  # public half is in clear
    assert rcpt.key_id == bytes.fromhex(keys.key_fingerprint(rcpt.public)[7:23])
    doc = json.loads((tmp_path / "site.key").read_text())
    assert doc["kdf"]["log2_n"] == FAST_SCRYPT and rcpt.public.hex() == doc["public"]


def test_identity_opens_what_the_recipient_sealed(tmp_path: Path) -> None:
    rcpt = make(tmp_path)
    ident = keys.load_identity(tmp_path / "site.key", "correct horse")
    assert ident.key_id == rcpt.key_id and ident.name == "site"
    assert open_bytes(seal_bytes(b"index", [rcpt], 1 << 16), [ident], trust=UNSIGNED_OK) == b"index"


def test_wrong_passphrase_is_an_integrity_error(tmp_path: Path) -> None:
    make(tmp_path)
    with pytest.raises(IntegrityError, match="wrong passphrase for private key 'site'") as info:
        keys.load_identity(tmp_path / "site.key", "wrong")
    assert info.value.exit_code == EXIT_DATAERR


def test_edited_name_or_public_key_breaks_the_key_file(tmp_path: Path) -> None:
    make(tmp_path)
    path = tmp_path / "site.key"
    doc = json.loads(path.read_text())
    doc["name"] = "other"
    path.write_text(json.dumps(doc))
    with pytest.raises(IntegrityError):
        keys.load_identity(path, "correct horse")


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_group_or_world_readable_private_key_is_refused(tmp_path: Path, mode: int) -> None:
    make(tmp_path)
    path = tmp_path / "site.key"
    path.chmod(mode)
    with pytest.raises(ConfigError, match=f"chmod 600 {path}"):
        keys.load_identity(path, "correct horse")


def test_existing_key_is_never_overwritten(tmp_path: Path) -> None:
    make(tmp_path)
    before = (tmp_path / "site.key").read_bytes()
    with pytest.raises(UsageError, match="already exists"):
        make(tmp_path)
    assert (tmp_path / "site.key").read_bytes() == before


@pytest.mark.parametrize("name", ["", "../x", "a b", "-x", "x" * 65, "é"])
def test_bad_key_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(UsageError, match="invalid key name"):
        make(tmp_path, name)


def test_empty_passphrase_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="empty passphrase"):
        make(tmp_path, passphrase="")


@pytest.mark.parametrize(
    "text",
    ["", "ssh-ed25519 AAAA x", "tapearc-x25519-v1 !!! site", "tapearc-x25519-v1 AAAA site",
     "tapearc-x25519-v1 " + "A" * 44 + " site\ntapearc-x25519-v1 " + "A" * 44 + " two"],
)  # fmt: skip
def test_malformed_public_keys(tmp_path: Path, text: str) -> None:
    path = tmp_path / "x.pub"
    path.write_text(text)
    with pytest.raises(ConfigError, match=str(path)):
        keys.load_recipient(path)


def test_passphrase_from_env_or_refusal_without_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAPEARC_PASSPHRASE", "from env")
    assert keys.passphrase_from_env_or_prompt() == "from env"
    monkeypatch.delenv("TAPEARC_PASSPHRASE")
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    with pytest.raises(ConfigError, match="TAPEARC_PASSPHRASE"):
        keys.passphrase_from_env_or_prompt()


def test_load_identities_opens_only_the_needed_keys(tmp_path: Path) -> None:
    site, escrow = make(tmp_path, "site", "one"), make(tmp_path, "escrow", "two")
    asked: list[str] = []

    def ask(prompt: str) -> str:
        asked.append(prompt)
        return "two"

    paths = [tmp_path / "site.key", tmp_path / "escrow.key"]
    got = keys.load_identities(paths, wanted=[escrow.key_id], passphrase=ask)
    assert [i.name for i in got] == ["escrow"] and asked == ["Passphrase for key escrow: "]
    with pytest.raises(WrongKeyError, match=f"needs key id 00112233.*{site.key_id.hex()} \\(site\\)"):
        keys.load_identities(paths, wanted=[bytes.fromhex("0011223344556677")], passphrase=ask)


def test_low_order_public_key_is_refused_as_a_recipient() -> None:
    from tapearc.format.keys import Recipient

    bogus = Recipient.from_public("zero", bytes(32))
    with pytest.raises(ConfigError, match="not a usable X25519 key"):
        seal_bytes(b"x", [bogus], 1 << 16)
