"""The `neggen-compare` flow: every method trained on the same data artifacts, then compared.

The plan (`neggen_core.compare.plan`) decides which runs a comparison needs from the valid scores
known so far; the flow submits each run to the configured task runner as soon as its settings are
decided (the baselines' searches first, NegGen's once the baselines on its backbone are chosen,
then every method's seeds), so the workers stay busy across those steps."""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.futures import PrefectFuture, as_completed
from prefect.task_runners import TaskRunner

from neggen_core import devices
from neggen_core.artifacts.store import ArtifactRef
from neggen_core.compare import plan as planning
from neggen_core.compare.stage import SPEC
from neggen_core.config import NeggenConfig, load_config
from neggen_core.pipeline.run import built_artifact
from neggen_core.threads import worker_threads
from tasks.attributes import attributes
from tasks.compare import compare as compare_task
from tasks.compare import record_choice, train_and_evaluate
from tasks.embeddings import embeddings
from tasks.ingest import ingest
from tasks.negatives import negatives
from tasks.runners import task_runner


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
    devices.check(config, ("embeddings", "train"))

    refs: dict[str, ArtifactRef] = {"ingest": ingest(config)}
    refs["attributes"] = attributes(config, refs["ingest"])
    refs["negatives"] = negatives(config, refs["ingest"], refs["attributes"])
    refs["embeddings"] = embeddings(config, refs["ingest"], refs["attributes"], refs["negatives"])
    if built_artifact(config, SPEC, refs) is None:
        build_runs(config, refs)
    return compare_task(config, refs).uri


def build_runs(config: NeggenConfig, data: dict[str, ArtifactRef]) -> None:
    """Train and evaluate every run the comparison needs on the configured task runner, each as
    soon as the plan decides it; a run already built is read back, not trained again, and runs
    that build the same artifacts (grid values their method never reads) are trained once."""
    settings = config.orchestration.task_runner
    threads = worker_threads(settings)
    scores: dict[planning.Run, float] = {}
    known: dict[str, float] = {}  # the valid score of each evaluate version built
    sharing: dict[str, list[planning.Run]] = {}  # the runs an evaluate version being built serves
    running: dict[PrefectFuture[float], str] = {}
    recorded: set[planning.Method] = set()

    with task_runner(settings) as runner:

        def submit_decided() -> None:
            answered = True
            while answered:  # a run answered by an artifact already built may decide others
                answered = False
                plan, todo = planning.advance(config, scores)
                for method, runs in plan.grid.items():
                    if method not in recorded:
                        recorded.add(method)
                        record_choice.with_options(
                            task_run_name=f"chosen: {method.name} on {method.backbone}"
                        )(config, method, _search_rows(plan, method, runs))
                for run in todo:
                    version = planning.artifacts(config, run).evaluate.version
                    if version in known:
                        scores[run], answered = known[version], True
                    elif version in sharing:
                        if run not in sharing[version]:
                            sharing[version].append(run)
                    else:
                        sharing[version] = [run]
                        running[_submit(runner, config, run, data, threads)] = version

        submit_decided()
        while running:
            done = next(as_completed(list(running)))
            version = running.pop(done)
            known[version] = done.result()
            for run in sharing.pop(version):
                scores[run] = known[version]
            submit_decided()


def _submit(
    runner: TaskRunner[Any],
    config: NeggenConfig,
    run: planning.Run,
    data: dict[str, ArtifactRef],
    threads: int,
) -> PrefectFuture[float]:
    name = f"{planning.label(config, run)} seed {run.seed}"
    task = train_and_evaluate.with_options(
        task_run_name=f"{name} ({planning.describe(run.params)})"
    )
    parameters: dict[str, Any] = {"config": config, "run": run, "data": data, "threads": threads}
    return runner.submit(task, parameters)


def _search_rows(
    plan: planning.Plan, method: planning.Method, runs: list[planning.Run]
) -> list[dict[str, object]]:
    return [
        {
            "point": planning.describe(run.params),
            "valid_recall_20": plan.valid[run],
            "chosen": run.params == plan.chosen[method],
        }
        for run in runs
    ]
