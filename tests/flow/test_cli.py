"""The `neggen` command: the flow run in-process under Prefect, status, demo data, errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from neggen.cli import main


def _mtimes(folder: str) -> dict[str, int]:
    return {
        os.path.join(d, f): os.stat(os.path.join(d, f)).st_mtime_ns
        for d, _, names in os.walk(folder)
        for f in names
    }


@pytest.mark.usefixtures("prefect_harness")
def test_run_builds_then_skips_and_status_reports(
    root: str, capfd: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "--set", f"artifacts.root={root}"]) == 0
    out, err = capfd.readouterr()
    path = out.strip().removeprefix("ingest: ")
    assert Path(path, "manifest.json").is_file()
    assert "ingest: built version" in out + err
    before = _mtimes(path)

    assert main(["run", "--set", f"artifacts.root={root}", "--until", "ingest"]) == 0
    out, err = capfd.readouterr()
    assert "already built" in out + err and "skipped" in out + err
    assert _mtimes(path) == before

    assert main(["status", "--json", "--set", f"artifacts.root={root}"]) == 0
    report = json.loads(capfd.readouterr().out)
    assert report["dataset"] == "demo-small"
    assert report["stages"]["ingest"]["path"] == path
    assert report["stages"]["ingest"]["complete"] and report["stages"]["ingest"]["up_to_date"]


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
