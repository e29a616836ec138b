"""Integrity and concurrency of an artifact root: damaged files are found (checksums) by status
and by the next run, which names the fix; a broken part of an earlier attempt is rebuilt; two
runs on one dataset take turns under its lock, and a waiting one names the holder."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from neggen.cli import main
from neggen_core.artifacts.store import ArtifactRef
from neggen_core.config import NeggenConfig, load_config
from neggen_core.errors import ArtifactError
from neggen_core.pipeline.run import run_stage, supersede_for_rebuild, superseded
from neggen_core.pipeline.stages import STAGE_ORDER, open_store, plan_versions
from neggen_core.pipeline.status import status
from tests.support.helpers import DEMO_SETTINGS, REPO

BUILT = STAGE_ORDER[: STAGE_ORDER.index("embeddings") + 1]


def _config(root: str, *more: str) -> NeggenConfig:
    return load_config(None, [f"artifacts.root={root}", *DEMO_SETTINGS, *more])


@pytest.fixture
def copied(demo_built: tuple[str, dict[str, ArtifactRef]], tmp_path: Path) -> str:
    """A copy of the session's demo root, free to damage: its source and ingest to embeddings
    only (other tests may have built more on the session's root)."""
    root = tmp_path / "artifacts"
    shutil.copytree(demo_built[0], root)
    for folder in (root / "demo-small").iterdir():
        if folder.is_dir() and folder.name not in {*BUILT, "source"}:
            shutil.rmtree(folder)
    return str(root)


def _part(root: str, stage: str, table: str) -> Path:
    version = plan_versions(_config(root))[stage]
    return next(Path(root, "demo-small", stage, version, table).glob("part-*.parquet"))


def test_a_flipped_byte_is_found_by_status_and_the_next_run(
    copied: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(copied)
    assert status(config)["damaged"] == []
    part = _part(copied, "ingest", "interactions")
    data = bytearray(part.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 16] = bytes(16)  # same size, other content
    part.write_bytes(bytes(data))

    report = status(config)
    ingest = report["stages"]["ingest"]
    assert not ingest["complete"] and "sha256 is not the manifest's" in ingest["damaged"][0]
    assert report["damaged"] == list(BUILT)  # and everything built on it
    assert report["stages"]["attributes"]["damaged_upstream"] == ["ingest"]
    assert not report["stages"]["embeddings"]["up_to_date"]
    assert (
        main(["status", f"--set=artifacts.root={copied}", *(f"--set={s}" for s in DEMO_SETTINGS)])
        == 3
    )
    assert "rebuild with `neggen run --rebuild ingest`" in capsys.readouterr().err

    refs = {s: open_store(config).ref(s, v) for s, v in plan_versions(config).items()}
    with pytest.raises(ArtifactError, match=r"ingest/\w+ is damaged: .*--rebuild ingest"):
        run_stage(config, "train", {"ingest": refs["ingest"], "embeddings": refs["embeddings"]})

    (aside,) = supersede_for_rebuild(config, ["ingest"])
    store = open_store(config)
    assert [version for version, _ in superseded(store, "ingest")] == [refs["ingest"].version]
    assert Path(aside).parent == Path(refs["ingest"].uri).parent  # kept beside, until gc
    rebuilt = run_stage(config, "ingest", {})
    assert not rebuilt.skipped and rebuilt.ref == refs["ingest"]
    assert status(config)["damaged"] == []  # the same content again: downstream is sound


def test_a_truncated_part_is_found_and_the_stage_is_not_skipped(copied: str) -> None:
    config = _config(copied)
    part = _part(copied, "embeddings", "negative_embeddings")
    part.write_bytes(part.read_bytes()[:100])
    report = status(config)
    assert report["damaged"] == ["embeddings"]
    assert "bytes, the manifest says" in report["stages"]["embeddings"]["damaged"][0]
    versions = plan_versions(config)
    upstream = {
        s: open_store(config).ref(s, versions[s]) for s in ("ingest", "attributes", "negatives")
    }
    with pytest.raises(ArtifactError, match=r"embeddings/\w+ is damaged"):
        run_stage(config, "embeddings", upstream)  # not "skipped: already built"


def test_a_broken_part_of_an_earlier_attempt_is_built_again(
    root: str, demo_built: tuple[str, dict[str, ArtifactRef]], caplog: pytest.LogCaptureFixture
) -> None:
    config = _config(root)
    ingest = run_stage(config, "ingest", {}).ref
    version = plan_versions(config)["attributes"]
    staging = Path(root, "demo-small", "attributes", f".staging-{version}", "descriptions")
    staging.mkdir(parents=True)
    (staging / "part-00000.parquet").write_bytes(b"PAR1 not really")
    with caplog.at_level(logging.WARNING):
        built = run_stage(config, "attributes", {"ingest": ingest})
    assert "a part that does not read" in caplog.text and "part-00000.parquet" in caplog.text
    # the same files as the session's demo, built without the broken part
    reference = open_store(_config(demo_built[0])).manifest("attributes", built.ref.version)
    rebuilt = open_store(config).manifest("attributes", built.ref.version)
    assert rebuilt.tables["descriptions"].files == reference.tables["descriptions"].files


HOLD = """
import sys, time
from neggen_core.config import load_config
from neggen_core.pipeline.stages import open_store, plan_versions
config = load_config(None, [f"artifacts.root={sys.argv[1]}"])
with open_store(config).lock("ingest", plan_versions(config)["ingest"], "a test holder", 60):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_a_waiting_run_names_the_holder(root: str) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, root, "30"], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        config = _config(root, "artifacts.lock_timeout_s=0.5")
        with pytest.raises(
            ArtifactError, match=rf"in use by a test holder \(pid {holder.pid} on .*waited"
        ):
            run_stage(config, "ingest", {})
        # another artifact builds meanwhile: the lock is the artifact's, not the dataset's
        with open_store(config).lock("ingest", "another-version", "a second holder", 0.5):
            pass
    finally:
        holder.kill()
        holder.wait()
    assert not run_stage(_config(root), "ingest", {}).skipped  # the lock died with its holder


BUILD = """
import sys
from neggen_core.config import load_config
from neggen_core.pipeline.run import run_stage
outcome = run_stage(load_config(None, [f"artifacts.root={sys.argv[1]}"]), "ingest", {})
print("skipped" if outcome.skipped else "built", flush=True)
"""


def _concurrent_ingests(root: Path) -> list[str]:
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", BUILD, str(root)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outcomes = []
    for run in runs:
        out, err = run.communicate(timeout=300)
        assert run.returncode == 0, err[-2000:]
        outcomes.append(out.strip())
    return sorted(outcomes)


@pytest.mark.parametrize(
    "trial", [*range(3), *(pytest.param(t, marks=pytest.mark.slow) for t in range(3, 10))]
)
def test_two_runs_on_a_new_demo_root_take_turns(tmp_path: Path, trial: int) -> None:
    root = tmp_path / f"trial-{trial}"
    started = time.perf_counter()
    assert _concurrent_ingests(root) == ["built", "skipped"]
    source = next((root / "demo-small" / "source").iterdir())
    assert (source / "COMPLETE").exists() and len(list((source / "images").iterdir())) == 300
    assert (source / "reviews_Demo_5.json.gz").stat().st_size > 0
    assert not list((root / "demo-small" / "source").glob(".staging-*"))
    assert time.perf_counter() - started < 120
