"""`neggen compare` on the demo: the table, the grid choice, the report in Chromium, the Prefect
artifacts, skip when built, and a killed comparison resumed to the same table."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from flows import compare as compare_flow
from neggen.cli import main
from neggen_core.artifacts.schemas import COMPARISON, GRID, SUMMARY
from neggen_core.artifacts.store import LOCKS, ArtifactStore
from neggen_core.compare.stage import result_tables
from neggen_core.errors import NeggenError
from tests.support.browser import check_page, find_chromium
from tests.support.helpers import DEMO_SETTINGS, REPO, copy_data_stages

GRID_SETTING = (
    "compare.grid={neggen: {train.neggen.effect_weight: [0.1, 0.4]}, "
    "dns: {train.samplers.dns.pool: [4, 8]}}"
)
METHODS = ["rns", "dns", "neggen", "neggen[no_causal]", "neggen[random_intervention]"]


def _args(root: str, methods: list[str] = METHODS, grid: str = GRID_SETTING) -> list[str]:
    settings = (f"artifacts.root={root}", *DEMO_SETTINGS, "compare.seeds=2", grid)
    return [
        *(f"--set={s}" for s in settings),
        "--methods",
        *methods,
        "--backbones",
        "lightgcn",
    ]


def _uri(out: str) -> str:
    return next(line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("compare:"))


def _table(uri: str, name: str, schema: object) -> pl.DataFrame:
    return pl.read_parquet(Path(uri, name)).cast(pl.Schema(schema))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def compared(
    demo_built: tuple[str, dict[str, object]], prefect_harness: None
) -> tuple[str, str, str]:
    """The demo's comparison, run once through the CLI: (artifact root, its URI, stdout)."""
    root = demo_built[0]
    out = StringIO()
    with redirect_stdout(out):
        assert main(["compare", *_args(root)]) == 0
    text = out.getvalue()
    return root, _uri(text), text


def test_comparison_table_grid_and_summary(compared: tuple[str, str, str]) -> None:
    _, uri, out = compared
    comparison = _table(uri, "comparison", COMPARISON)
    grid = _table(uri, "grid", GRID)
    # NegGen and its ablations take the real negatives of the better baseline on valid
    baselines = grid.filter(pl.col("chosen") & pl.col("method").str.starts_with("lightgcn+"))
    sampler = baselines.sort("valid_recall_20", descending=True, maintain_order=True)["method"][0]
    sampler = sampler.removeprefix("lightgcn+")
    labels = [
        "lightgcn+rns",
        "lightgcn+dns",
        f"neggen(lightgcn)+{sampler}",
        f"neggen(lightgcn)[no_causal]+{sampler}",
        f"neggen(lightgcn)[random_intervention]+{sampler}",
    ]
    assert comparison["method"].unique(maintain_order=True).to_list() == labels
    assert sorted(comparison["seed"].unique()) == [999, 1000]
    # every method x seed x split x metric x k, once
    assert comparison.height == len(labels) * 2 * 2 * 4 * 3
    assert comparison.select("method", "seed", "split", "metric", "k").is_duplicated().sum() == 0
    assert (comparison["train_seconds"] > 0).all()

    # the search: every point run with the first seed, the best valid Recall@20 chosen; the
    # same budget (here: every grid whole) for NegGen and each of its ablations
    for method, points in grid.group_by("method"):
        best = points.sort("valid_recall_20", descending=True, maintain_order=True).row(
            0, named=True
        )
        assert points.filter(pl.col("chosen"))["params"].to_list() == [best["params"]], method
    assert grid.height == 1 + 2 + 2 + 2 + 2
    neggen_params = [json.loads(p) for p in grid.filter(pl.col("method") == labels[2])["params"]]
    assert all(p["train.sampler"] == sampler for p in neggen_params)
    chosen_pool = json.loads(
        grid.filter((pl.col("method") == "lightgcn+dns") & pl.col("chosen"))["params"][0]
    )["train.samplers.dns.pool"]
    # the final dns runs were trained with the chosen pool: the seed-999 one is the grid's run
    dns_seed0 = comparison.filter(
        (pl.col("method") == "lightgcn+dns")
        & (pl.col("seed") == 999)
        & (pl.col("split") == "valid")
        & (pl.col("metric") == "recall")
        & (pl.col("k") == 20)
    )["value"][0]
    chosen_row = grid.filter((pl.col("method") == "lightgcn+dns") & pl.col("chosen")).row(
        0, named=True
    )
    assert dns_seed0 == pytest.approx(chosen_row["valid_recall_20"])
    assert chosen_pool in (4, 8)

    summary = _table(uri, "summary", SUMMARY)
    expected = comparison.group_by("method", "split", "metric", "k").agg(
        pl.col("value").mean().alias("m"), pl.col("value").std().alias("s")
    )
    joined = summary.join(expected, on=["method", "split", "metric", "k"])
    assert joined.height == summary.height == comparison.height // 2
    assert (joined["mean"] - joined["m"]).abs().max() < 1e-12
    assert (joined["std"] - joined["s"]).abs().max() < 1e-12

    report = json.loads(Path(uri, "report.json").read_text())
    tests = report["significance"]
    # NegGen against the best baseline (on valid) and its random_intervention control, two
    # metrics each, Holm-adjusted over the four
    assert [(t["role"], t["metric"]) for t in tests] == [
        ("best baseline", "recall@20"),
        ("best baseline", "ndcg@20"),
        ("random_intervention", "recall@20"),
        ("random_intervention", "ndcg@20"),
    ]
    assert {t["method"] for t in tests} == {labels[2]}
    assert tests[2]["baseline"] == labels[4]
    assert all(0 < t["p_value"] <= t["p_holm"] <= 1 for t in tests)
    assert report["verdict"]["lines"][0].startswith(f"**{labels[2]} is ")
    assert report["software"]["libraries"]["torch"].startswith("2.13.0")
    assert report["budget"] == 4 and report["per_seed"][labels[0]]["recall@20"]
    assert "test recall@20" in out and "report:" in out


def test_report_renders_in_chromium(compared: tuple[str, str, str], tmp_path: Path) -> None:
    _, uri, _ = compared
    md = Path(uri, "report.md").read_text()
    for heading in (
        "## Verdict",
        "## Significance",
        "## Test results",
        "## Per seed (test)",
        "## Training curves",
        "## Hyper-parameters",
        "## Generated negatives",
        "## Dataset",
        "## Software",
    ):
        assert heading in md
    for figure in ("differences.png", "curves.png", "negatives.png"):
        assert Path(uri, figure).read_bytes()[:4] == b"\x89PNG" and f"]({figure})" in md
    try:
        find_chromium()
    except NeggenError as exc:
        pytest.skip(str(exc))
    check = check_page(Path(uri, "report.html"), tmp_path / "report.png")
    assert check.ok, check
    assert len(check.images) == 3 and all(i["width"] > 300 for i in check.images)
    assert check.table_rows[0] == 1 + 4  # header + one row per test (two metrics, two tests)
    assert "Verdict" in check.headings and "Dataset" in check.headings
    assert (tmp_path / "report.png").stat().st_size > 20_000


def test_prefect_artifacts_status_and_skip(
    compared: tuple[str, str, str], capfd: pytest.CaptureFixture[str]
) -> None:
    root, uri, _ = compared
    from prefect.artifacts import Artifact

    markdown = Artifact.get("neggen-compare-demo-small")
    assert markdown is not None and "## Verdict" in str(markdown.data)
    table = Artifact.get("neggen-compare-demo-small-table")
    assert table is not None and "neggen(lightgcn)+rns" in str(table.data)

    # --methods / --backbones restrict compare.methods: status sees the same config with --set
    methods = "compare.methods={lightgcn: [" + ", ".join(f'"{m}"' for m in METHODS) + "]}"
    settings = [a for a in _args(root) if a.startswith("--set")]
    assert main(["status", "--json", *settings, f"--set={methods}"]) == 0
    status = json.loads(capfd.readouterr().out)
    assert status["compare"]["path"] == uri and status["compare"]["up_to_date"]

    store_root = Path(root) / "demo-small"

    def written() -> dict[Path, int]:
        """Every file's mtime but the locks', which each run takes (rewrites)."""
        files = (p for p in store_root.rglob("*") if p.is_file() and LOCKS not in p.parts)
        return {p: p.stat().st_mtime_ns for p in files}

    before = written()
    started = time.perf_counter()
    assert main(["compare", *_args(root)]) == 0
    assert "compare: " + uri in capfd.readouterr().out
    assert written() == before
    assert time.perf_counter() - started < 60


def test_killed_comparison_resumes_to_the_same_table(
    compared: tuple[str, str, str], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    root, _, _ = compared
    small = {"methods": ["rns", "neggen"], "grid": "compare.grid={}"}
    fresh = tmp_path / "artifacts"
    copy_data_stages(root, fresh)
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")}
    command = [sys.executable, "-m", "neggen", "compare", *_args(str(fresh), **small)]
    log = tmp_path / "killed.log"
    with log.open("w") as sink:
        process = subprocess.Popen(
            command, cwd=REPO, env=env, stdout=sink, stderr=sink, start_new_session=True
        )
    evaluated = fresh / "demo-small" / "evaluate"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if len(list(evaluated.glob("*/manifest.json"))) >= 2:
            break
        time.sleep(0.1)
    assert process.poll() is None, f"it ended before it could be killed: {log.read_text()[-3000:]}"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (fresh / "demo-small" / "compare").exists()

    assert main(["compare", *_args(str(fresh), **small)]) == 0  # resumed
    resumed = _uri(capfd.readouterr().out)
    assert main(["compare", *_args(root, **small)]) == 0  # uninterrupted, beside the others
    uninterrupted = _uri(capfd.readouterr().out)
    assert Path(resumed).name == Path(uninterrupted).name
    columns = [c for c in COMPARISON.names if c != "train_seconds"]  # wall-clock time differs
    assert (
        _table(resumed, "comparison", COMPARISON)
        .select(columns)
        .equals(_table(uninterrupted, "comparison", COMPARISON).select(columns))
    )
    assert _table(resumed, "grid", GRID).equals(_table(uninterrupted, "grid", GRID))


def test_grid_points_that_build_the_same_run_are_trained_once(
    compared: tuple[str, str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`real_only` reads no generated negative: a grid over their weight is two points of one
    model, submitted to the task runner once, shown twice with the same valid score."""
    submitted: list[object] = []
    submit = compare_flow._submit

    def counted(*args: Any) -> Any:
        submitted.append(args[2])
        return submit(*args)

    monkeypatch.setattr(compare_flow, "_submit", counted)
    fresh = tmp_path / "artifacts"
    copy_data_stages(compared[0], fresh)
    grid = "compare.grid={neggen: {train.neggen.generated_weight: [0.25, 1.0]}}"
    thread = "orchestration.task_runner.kind=thread"
    args = [*_args(str(fresh), ["neggen[real_only]"], grid), f"--set={thread}"]
    out = StringIO()
    with redirect_stdout(out):
        assert main(["compare", *args]) == 0
    points = _table(_uri(out.getvalue()), "grid", GRID)
    assert points.height == 2 and points["valid_recall_20"].n_unique() == 1
    assert points["chosen"].to_list() == [True, False]  # the first of ties
    assert len(submitted) == 2  # the search's one model, then the second seed's
    assert len(list((fresh / "demo-small" / "train").glob("*/manifest.json"))) == 2


RUNNERS = {
    "one worker": (
        "orchestration.task_runner.kind=thread",
        "orchestration.task_runner.max_workers=1",
    ),
    "two processes": (
        "orchestration.task_runner.kind=process",
        "orchestration.task_runner.max_workers=2",
    ),
    "local dask": (
        "orchestration.task_runner.kind=dask",
        "orchestration.task_runner.max_workers=2",
    ),
}


def test_the_same_tables_whatever_runs_the_comparison(
    compared: tuple[str, str, str], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """1 worker with every core, 2 processes with one core each, a local Dask cluster: each
    trains the same runs from its own root, and every result table is the same."""
    root, _, _ = compared
    methods = ["rns", "dns", "neggen"]
    grid = "compare.grid={dns: {train.samplers.dns.pool: [4, 8]}}"
    results = {}
    for name, settings in RUNNERS.items():
        fresh = tmp_path / name.replace(" ", "-")
        copy_data_stages(root, fresh)
        # 8 epochs: enough for a thread-dependent sum to show in NegGen's losses (epoch 4)
        more = (*settings, "train.epochs=8")
        args = _args(str(fresh), methods, grid)
        assert main(["compare", *args, *(f"--set={s}" for s in more)]) == 0, name
        uri = _uri(capfd.readouterr().out)
        assert Path(uri).parent.parent == fresh / "demo-small", uri  # built here, not reused
        store = ArtifactStore(str(fresh), "demo-small")
        results[name] = result_tables(store, store.ref("compare", Path(uri).name))
    first = results["one worker"]
    assert first["comparison"].select("method", "seed").unique().height == 3 * 2
    assert first["grid"].height == 1 + 2 + 1  # rns, dns's two points, neggen
    for name, tables in results.items():
        for table, frame in tables.items():
            assert frame.equals(first[table]), f"{name}: {table} differs from one worker's"
