"""The `neggen-compare` flow: every method trained on the same data artifacts, then compared."""

from __future__ import annotations

from prefect import flow

from neggen_core.artifacts.store import ArtifactRef
from neggen_core.compare import plan as planning
from neggen_core.compare.stage import SPEC
from neggen_core.config import load_config
from neggen_core.stages import open_store, plan_versions
from tasks.attributes import attributes
from tasks.compare import compare as compare_task
from tasks.embeddings import embeddings
from tasks.evaluate import evaluate
from tasks.ingest import ingest
from tasks.negatives import negatives
from tasks.train import train


@flow(name="neggen-compare")
def compare(
    config_path: str | None = None,
    overrides: list[str] | None = None,
    methods: list[str] | None = None,
    backbones: list[str] | None = None,
    seeds: int | None = None,
) -> str:
    """Build the data stages once, train and evaluate every method (grid, then seeds), and
    write the comparison; returns its artifact URI."""
    config = planning.comparison_config(
        load_config(config_path, overrides or []), methods, backbones, seeds
    )

    refs: dict[str, ArtifactRef] = {"ingest": ingest(config)}
    refs["attributes"] = attributes(config, refs["ingest"])
    refs["negatives"] = negatives(config, refs["ingest"], refs["attributes"])
    refs["embeddings"] = embeddings(config, refs["ingest"], refs["attributes"], refs["negatives"])

    def train_and_evaluate(built: planning.RunArtifacts) -> None:
        name = f"{built.label} seed {built.run.seed}"
        trained = train.with_options(task_run_name=f"train {name}")(
            built.config, refs["ingest"], refs["embeddings"]
        )
        evaluate.with_options(task_run_name=f"evaluate {name}")(
            built.config, refs["ingest"], refs["embeddings"], trained
        )

    if not open_store(config).exists("compare", plan_versions(config, [SPEC])["compare"]):
        planning.run_all(config, train_and_evaluate)
    return compare_task(config, refs).uri
