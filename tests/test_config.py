"""Config loading and validation: every problem names the key and exits 78."""

from __future__ import annotations

from pathlib import Path

import pytest

from tapearc.config import load_settings, parse_settings, parse_size
from tapearc.errors import EXIT_CONFIG, ConfigError

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


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "etc" / "tapearc.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, GOOD))
    assert s.sources == [(tmp_path / "etc" / "pacs").resolve()]
    assert s.catalog_path == (tmp_path / "etc" / "catalog.sqlite").resolve()
    assert s.pools["A"].drive == "d1" and s.pools["A"].vault == "north"
    assert s.drives["d1"].options == {"path": "vt"}
    assert s.block_size == 1 << 20


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (GOOD.replace('name = "gh-1"', ""), "site.name"),
        (GOOD.replace('name = "gh-1"', 'name = "Mr Smith\'s ward"'), "site.name"),
        (GOOD.replace('drive = "d1"', 'drive = "nope"'), "pools.A.drive"),
        (GOOD.replace('driver = "vtape"', ""), "drives.d1.driver"),
        (GOOD + '[archive]\nblock_size = "3 MiB"\n', "archive.block_size"),
        (GOOD + '[archive]\nread_rate = "fast"\n', "archive.read_rate"),
        (GOOD + '[verify]\nafter_write = "maybe"\n', "verify.after_write"),
        (GOOD.replace('sources = ["pacs"]', "sources = 3"), "ingest.sources"),
        (GOOD.replace("sources =", "source ="), "ingest.source"),  # a misspelt key
        (GOOD + "[archiv]\nbuffer = 1\n", "[archiv]"),
        (GOOD + "[rotation]\nmax_onsite_dayz = 3\n", "rotation.max_onsite_dayz"),
        (GOOD + '[pools.B]\ndrive = "d1"\nvault = "north"\n', "vault"),  # one vault, two pools
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, text))
    assert key in str(err.value)
    assert err.value.exit_code == EXIT_CONFIG


def test_missing_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tapearc init"):
        load_settings(tmp_path / "absent.toml")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_settings(write(tmp_path, "[site\nname="))


def test_sizes() -> None:
    assert parse_size("1 MiB") == 1 << 20
    assert parse_size("2GB") == 2 * 10**9
    assert parse_size(512) == 512
    for bad in ("-1", "1 XB", True, -5):
        with pytest.raises(ConfigError):
            parse_size(bad)


def test_parse_without_file_uses_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    import tomllib

    s = parse_settings(tomllib.loads(GOOD), None)
    assert s.base_dir == tmp_path.resolve()
