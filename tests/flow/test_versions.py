"""Versions a user manages: `neggen ls`, `neggen gc` (dry run, then for real), `neggen run
--rebuild` keeping the old version until gc, `status --check` and the exit statuses."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from neggen.cli import EXIT_FAILED, EXIT_NOT_READY, EXIT_USAGE, main
from neggen_core.config import NeggenConfig, load_config
from neggen_core.pipeline.run import run_stage
from neggen_core.pipeline.stages import STAGE_ORDER, open_store, plan_versions
from tests.support.helpers import DATA_STAGES, DEMO_SETTINGS, copy_data_stages


@pytest.fixture(scope="module")
def built_once(
    tmp_path_factory: pytest.TempPathFactory, demo_built: tuple[str, dict[str, object]]
) -> Path:
    """The session's demo data stages, with train and evaluate built on them by two configs (3
    and 2 epochs), written as files beside the root: `config.yaml`, `two-epochs.yaml`."""
    folder = tmp_path_factory.mktemp("versions")
    root = folder / "artifacts"
    copy_data_stages(demo_built[0], root)
    for epochs in (2, 3):  # the main config's last
        settings = [f"artifacts.root={root}", *DEMO_SETTINGS, f"train.epochs={epochs}"]
        config = load_config(None, settings)
        store, versions = open_store(config), plan_versions(config)
        refs = {s: store.ref(s, versions[s]) for s in DATA_STAGES}
        refs["train"] = run_stage(config, "train", refs).ref
        run_stage(config, "evaluate", refs)
        name = "two-epochs.yaml" if epochs == 2 else "config.yaml"
        (folder / name).write_text(yaml.safe_dump(config.model_dump(mode="json")))
    return folder


@pytest.fixture
def built(built_once: Path, tmp_path: Path) -> list[str]:
    """A copy of `built_once` for one test (which may remove or damage what it holds): the CLI
    arguments of the 3-epoch config (the 2-epoch one is `two-epochs.yaml` beside it)."""
    shutil.copytree(built_once / "artifacts", tmp_path / "artifacts")
    for name in ("config.yaml", "two-epochs.yaml"):
        config = yaml.safe_load((built_once / name).read_text())
        config["artifacts"]["root"] = str(tmp_path / "artifacts")
        (tmp_path / name).write_text(yaml.safe_dump(config))
    return ["--config", str(tmp_path / "config.yaml")]


def _config(args: list[str]) -> NeggenConfig:
    return load_config(args[1], [])


def _listed(settings: list[str], capfd: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    assert main(["ls", "--json", *settings]) == 0
    listed: list[dict[str, object]] = json.loads(capfd.readouterr().out)
    return listed


def test_ls_lists_every_version_and_marks_the_current_ones(
    built: list[str], capfd: pytest.CaptureFixture[str]
) -> None:
    listed = _listed(built, capfd)
    by_stage = {s: [v for v in listed if v["stage"] == s] for s in STAGE_ORDER}
    assert [len(by_stage[s]) for s in STAGE_ORDER] == [1, 1, 1, 1, 2, 2]
    versions = plan_versions(_config(built))
    for entry in listed:
        assert entry["current"] == (entry["version"] == versions[str(entry["stage"])])
        assert isinstance(entry["bytes"], int) and entry["bytes"] > 0
    (old_train,) = [v for v in by_stage["train"] if not v["current"]]
    assert old_train["summary"] == "train.epochs=2"
    (old_eval,) = [v for v in by_stage["evaluate"] if not v["current"]]
    assert old_eval["summary"] == f"on train {old_train['version']}"

    assert main(["ls", *built]) == 0
    lines = capfd.readouterr().out.splitlines()
    assert len(lines) == len(listed)
    assert any(line.startswith("train ") and "train.epochs=2" in line for line in lines)


def test_gc_lists_then_removes_what_no_config_needs(
    built: list[str], capfd: pytest.CaptureFixture[str]
) -> None:
    config = _config(built)
    store = open_store(config)
    before = {s: store.versions(s) for s in STAGE_ORDER}

    assert main(["gc", *built]) == 0  # a dry run: nothing goes
    out = capfd.readouterr().out
    assert "would remove 2 versions" in out and "--delete" in out
    assert {s: store.versions(s) for s in STAGE_ORDER} == before

    assert main(["gc", "--delete", *built]) == 0
    assert "removed 2 versions" in capfd.readouterr().out
    current = plan_versions(config)
    assert {s: store.versions(s) for s in STAGE_ORDER} == {s: [current[s]] for s in STAGE_ORDER}
    assert main(["status", "--check", *built]) == 0  # what the config needs is all there

    assert main(["gc", *built]) == 0
    assert "would remove 0 versions" in capfd.readouterr().out


def test_gc_keeps_every_given_configs_versions(
    built: list[str], capfd: pytest.CaptureFixture[str]
) -> None:
    other = str(Path(built[1]).with_name("two-epochs.yaml"))
    assert main(["gc", "--delete", *built, "--config", other]) == 0
    assert "removed 0 versions" in capfd.readouterr().out
    assert len(_listed(built, capfd)) == 8


@pytest.mark.usefixtures("prefect_harness")
def test_rebuild_builds_anew_and_keeps_the_old_version_until_gc(
    built: list[str], capfd: pytest.CaptureFixture[str]
) -> None:
    config = _config(built)
    store, version = open_store(config), plan_versions(config)["train"]
    old_manifest = Path(store.path("train", version), "manifest.json").read_text()

    assert main(["run", "--from", "train", "--until", "train", "--rebuild", "train", *built]) == 0
    capfd.readouterr()
    new_manifest = Path(store.path("train", version), "manifest.json").read_text()
    assert new_manifest != old_manifest  # built again (its time of creation differs)
    model = [
        [f for f in json.loads(manifest)["files"] if f["path"] == "model.pt"]
        for manifest in (old_manifest, new_manifest)
    ]
    assert model[0] == model[1] and model[0]  # the same model, to the byte

    listed = _listed(built, capfd)
    (aside,) = [v for v in listed if v["superseded"]]
    assert (aside["stage"], aside["version"], aside["current"]) == ("train", version, False)
    assert main(["gc", "--delete", *built]) == 0
    assert "removed 3 versions" in capfd.readouterr().out  # the superseded one and 2 epochs'
    assert not [v for v in _listed(built, capfd) if v["superseded"]]


def test_status_check_exit_statuses(
    built: list[str], capfd: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["status", "--check", *built]) == 0
    capfd.readouterr()

    # stale: a setting changed, its version not built
    assert main(["status", "--check", *built, "--set", "train.epochs=4"]) == EXIT_NOT_READY
    assert "not up to date: train, evaluate" in capfd.readouterr().err
    assert main(["status", *built, "--set", "train.epochs=4"]) == 0  # a report, not a check

    # missing: nothing under another root
    assert main(["status", "--check", *built, f"--set=artifacts.root={tmp_path / 'none'}"]) == 3
    capfd.readouterr()

    # damaged: a byte of a part file changed
    config = _config(built)
    folder = Path(open_store(config).path("evaluate", plan_versions(config)["evaluate"]))
    part = next((folder / "metrics").glob("*.parquet"))
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0xFF
    part.write_bytes(bytes(data))
    assert main(["status", *built]) == EXIT_NOT_READY
    assert main(["status", "--check", *built]) == EXIT_NOT_READY
    assert "rebuild with `neggen run --rebuild evaluate`" in capfd.readouterr().err


def test_usage_errors_exit_2_and_pipeline_failures_exit_1(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    assert main(["ls", "--set", "train.epochs=lots"]) == EXIT_USAGE
    assert "train.epochs" in capfd.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["ls", "--no-such-option"])
    assert exited.value.code == EXIT_USAGE
    capfd.readouterr()

    missing = tmp_path / "reviews.json.gz"
    settings = [
        f"--set=artifacts.root={tmp_path / 'artifacts'}",
        "--set=dataset.demo=null",
        f"--set=dataset.interactions={missing}",
        f"--set=dataset.items={missing}",
    ]
    assert main(["status", *settings]) == EXIT_FAILED  # reading the input files failed
    assert str(missing) in capfd.readouterr().err
