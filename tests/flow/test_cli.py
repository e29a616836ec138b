"""The `neggen` command: the flow run in-process under Prefect, status, demo data, errors."""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from neggen.cli import main
from neggen_core.config import load_config
from neggen_core.errors import ArtifactError
from neggen_core.pipeline.run import built_ref
from neggen_core.pipeline.stages import STAGE_ORDER
from tests.support.helpers import DEMO_SETTINGS, run_logs


def _mtimes(folder: str) -> dict[str, int]:
    return {
        os.path.join(d, f): os.stat(os.path.join(d, f)).st_mtime_ns
        for d, _, names in os.walk(folder)
        for f in names
    }


def _uris(out: str) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in out.strip().splitlines() if ": " in line)


@pytest.mark.usefixtures("prefect_harness")
def test_run_builds_then_skips_and_status_reports(
    root: str, capfd: pytest.CaptureFixture[str]
) -> None:
    settings = [f"--set={s}" for s in (f"artifacts.root={root}", *DEMO_SETTINGS)]
    since = datetime.now(UTC)
    assert main(["run", *settings]) == 0
    captured = capfd.readouterr()
    out = captured.out
    uris = _uris(out)
    assert list(uris) == list(STAGE_ORDER)
    assert "test recall@20 = " in out
    assert "\r" not in captured.err  # not a terminal: no progress bar drawn
    assert all(Path(uri, "manifest.json").is_file() for uri in uris.values())
    logs, since = run_logs(since), datetime.now(UTC)
    for stage in uris:
        assert f"{stage}: built version" in logs
    # the train task's log in the API: one line per epoch (3), as each ends
    epochs = re.findall(r"^train-\S* \| \S+ epoch (\d)/3: loss .*, valid recall@20", logs, re.M)
    assert epochs == ["1", "2", "3"]
    before = {stage: _mtimes(uri) for stage, uri in uris.items()}

    assert main(["run", *settings]) == 0
    capfd.readouterr()
    logs, since = run_logs(since), datetime.now(UTC)
    assert logs.count("already built") == len(STAGE_ORDER) and "skipped" in logs
    assert {stage: _mtimes(uri) for stage, uri in uris.items()} == before

    # a new round of negatives: ingest and attributes reused, negatives (and what follows) new
    assert main(["run", *settings, "--set", "negatives.round=2"]) == 0
    round_two = _uris(capfd.readouterr().out)
    assert round_two["ingest"] == uris["ingest"] and round_two["attributes"] == uris["attributes"]
    for stage in ("negatives", "embeddings", "train", "evaluate"):
        assert round_two[stage] != uris[stage]
    logs = run_logs(since)
    # reused: Prefect's cache (keyed by the artifact version, which exists) answers without
    # running the task; the cache key was recorded when the second run found them built
    for stage in ("ingest", "attributes"):
        assert re.search(rf"^{stage}-\S* \| Finished in state Cached", logs, re.M), stage
    assert "negatives: built" in logs
    assert {stage: _mtimes(uri) for stage, uri in uris.items()} == before

    assert main(["run", *settings, "--from", "attributes"]) == 0
    assert list(_uris(capfd.readouterr().out)) == list(STAGE_ORDER[1:])

    assert main(["status", "--json", *settings]) == 0
    report = json.loads(capfd.readouterr().out)
    assert report["dataset"] == "demo-small"
    for stage, uri in uris.items():
        assert report["stages"][stage]["path"] == uri
        assert report["stages"][stage]["complete"] and report["stages"][stage]["up_to_date"]


def test_from_a_stage_that_was_never_built_is_a_clear_error(root: str) -> None:
    with pytest.raises(ArtifactError, match="stage 'ingest' is not built for this config"):
        built_ref(load_config(None, [f"artifacts.root={root}"]), "ingest")


def test_status_of_nothing_built(root: str, capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--set", f"artifacts.root={root}"]) == 0
    assert "not built" in capfd.readouterr().out


def test_errors_exit_2_with_the_reason(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("ingest:\n  k_core: lots\n")
    assert main(["run", "--config", str(bad)]) == 2
    err = capfd.readouterr().err
    assert f"neggen: error: {bad}: invalid configuration" in err
    assert "ingest.k_core" in err


def test_demo_data_command(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["demo-data", "--out", str(tmp_path / "d"), "--seed", "3"]) == 0
    assert "wrote 600 users, 300 items, 6,000 interactions" in capfd.readouterr().out
    assert (tmp_path / "d" / "reviews_Demo_5.json.gz").is_file()
