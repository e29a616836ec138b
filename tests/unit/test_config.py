from __future__ import annotations

from pathlib import Path

import pytest

from neggen_core.config import NeggenConfig, load_config
from neggen_core.errors import ConfigError
from tests.support.helpers import REPO


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_demo_yaml_is_the_embedded_default() -> None:
    loaded = load_config(REPO / "configs" / "demo.yaml")
    assert loaded == load_config(None)
    assert loaded.dataset == NeggenConfig().dataset


def test_office_yaml_points_at_the_shared_data() -> None:
    config = load_config(REPO / "configs" / "office.yaml")
    assert config.dataset.format == "index_json"
    assert config.dataset.interactions == str(
        (REPO / ".." / "shared/data/amazon-office/Office.inter.json").resolve()
    )


def test_unknown_key_names_the_file_and_the_key(tmp_path: Path) -> None:
    path = _write(tmp_path, "ingest:\n  kcore: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value)
    assert "ingest.kcore: unknown key" in str(err.value)


def test_wrong_type_names_the_file_and_the_key(tmp_path: Path) -> None:
    path = _write(tmp_path, "ingest:\n  k_core: many\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value)
    assert "ingest.k_core" in str(err.value)
    assert "'many'" in str(err.value)


@pytest.mark.parametrize("value", ["true", "2.5", "'5'"])
def test_k_core_is_an_integer_only(tmp_path: Path, value: str) -> None:
    """`k_core: true` once meant k = 1 (k-core off), silently."""
    path = _write(tmp_path, f"ingest:\n  k_core: {value}\n")
    with pytest.raises(ConfigError, match=r"ingest\.k_core: Input should be a valid integer"):
        load_config(path)


def test_override_sets_a_typed_value() -> None:
    config = load_config(None, ["ingest.k_core=10", "dataset.name=other"])
    assert config.ingest.k_core == 10
    assert config.dataset.name == "other"


def test_override_of_an_unknown_key_lists_the_known_ones() -> None:
    with pytest.raises(
        ConfigError,
        match=r"--set ingest\.kcore=3: unknown key 'kcore' in ingest "
        r"\(known: k_core, max_line_bytes\)",
    ):
        load_config(None, ["ingest.kcore=3"])


def test_override_with_a_wrong_type_is_an_error() -> None:
    with pytest.raises(
        ConfigError,
        match=r"(?s)with --set ingest\.k_core=-1.*ingest\.k_core: Input should be greater",
    ):
        load_config(None, ["ingest.k_core=-1"])


def test_override_without_equals_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"expected section\.key=value"):
        load_config(None, ["ingest.k_core"])


def test_relative_input_paths_follow_the_config_file(tmp_path: Path) -> None:
    sub = tmp_path / "conf"
    sub.mkdir()
    path = sub / "x.yaml"
    path.write_text(
        "dataset:\n  name: x\n  format: index_json\n"
        "  interactions: data/a.json\n  items: data/b.json\n"
    )
    config = load_config(path)
    assert config.dataset.interactions == str(sub / "data" / "a.json")
    assert Path(config.artifacts.root).is_absolute()


def test_dataset_needs_exactly_one_source(tmp_path: Path) -> None:
    path = _write(tmp_path, "dataset:\n  name: x\n  format: amazon2014\n  demo: null\n")
    with pytest.raises(ConfigError, match=r"exactly one of dataset\.interactions"):
        load_config(path)


def test_metadata_file_is_required_except_for_mmrec(tmp_path: Path) -> None:
    path = _write(tmp_path, "dataset:\n  format: amazon2018\n  interactions: r.json\n")
    with pytest.raises(ConfigError, match=r"needs dataset\.items"):
        load_config(path)
    path = _write(tmp_path, "dataset:\n  format: mmrec\n  interactions: x.inter\n")
    assert load_config(path).dataset.items is None


def test_uri_root_is_kept_as_given() -> None:
    assert load_config(None, ["artifacts.root=memory://neggen"]).artifacts.root == "memory://neggen"
