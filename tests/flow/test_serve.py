"""Production use, for real: `prefect server start`, `neggen serve`, `prefect deployment run
neggen/full --watch`, a second run that skips, a served run killed and run again, and the
scheduled `regenerate-negatives` deployment; every process started here is stopped here."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from flows.deployments import FULL, REGENERATE
from neggen_core.artifacts.schemas import METRICS, NEGATIVES
from neggen_core.artifacts.store import LOCKS
from neggen_core.config import load_config
from neggen_core.pipeline.run import run_stage
from neggen_core.pipeline.stages import STAGE_ORDER, open_store, plan_versions
from tests.support.helpers import DEMO_SETTINGS, REPO, copy_data_stages
from tests.support.prefect_processes import BIN, Api, Processes, free_port, prefect_env, wait


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, demo_built: tuple[str, dict[str, object]]
) -> Iterator[tuple[Processes, Api, str, list[str]]]:
    """A Prefect server on a free loopback port and `neggen serve` against it, on the demo
    config whose data stages the session already built (copied, not shared)."""
    tmp = tmp_path_factory.mktemp("served")
    root = tmp / "artifacts"
    copy_data_stages(demo_built[0], root)
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    processes = Processes(prefect_env(tmp / "prefect-home", url), tmp)
    overrides = [f"artifacts.root={root}", *DEMO_SETTINGS]
    api = Api(url)
    try:
        processes.start_server(port, api)
        serve_args = [str(BIN / "neggen"), "serve", *(f"--set={o}" for o in overrides)]
        processes.start("serve", *serve_args)
        wait("both deployments", lambda: {FULL, REGENERATE} <= set(api.deployments()), 120, tmp)
        yield processes, api, str(root), serve_args
    finally:
        processes.stop_all()


def _run_deployment(processes: Processes, name: str, *params: str) -> str:
    done = processes.run(
        str(BIN / "prefect"), "deployment", "run", f"neggen/{name}", "--watch", *params
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


def store_has_train(root: str, overrides: list[str]) -> bool:
    config = load_config(None, overrides)
    return open_store(config).exists("train", plan_versions(config)["train"])


def _files(folder: Path) -> dict[Path, int]:
    """Every file's mtime but the locks', which each run takes (rewrites)."""
    return {
        p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file() and LOCKS not in p.parts
    }


def test_full_deployment_runs_then_skips(served: tuple[Processes, Api, str, list[str]]) -> None:
    processes, api, root, _ = served
    out = _run_deployment(processes, FULL)
    assert "Completed" in out
    config = load_config(None, [f"artifacts.root={root}", *DEMO_SETTINGS])
    store = open_store(config)
    versions = plan_versions(config)
    for stage in STAGE_ORDER:
        assert store.exists(stage, versions[stage]) and not store.verify(stage, versions[stage])
    full = api.deployments()[FULL]["id"]
    runs = api.post("/flow_runs/filter", {"deployments": {"id": {"any_": [full]}}})
    assert [r["state"]["type"] for r in runs] == ["COMPLETED"]
    artifacts = {a["key"] for a in api.post("/artifacts/filter", {}) if a["key"]}
    assert {f"demo-small-{stage}" for stage in STAGE_ORDER} <= artifacts

    before = _files(Path(root))
    assert "Completed" in _run_deployment(processes, FULL)
    assert _files(Path(root)) == before  # every stage skipped: nothing written


def test_served_run_killed_then_run_again_gives_the_same_outputs(
    served: tuple[Processes, Api, str, list[str]], tmp_path: Path
) -> None:
    processes, api, root, serve_args = served
    # more epochs than the demo settings, so that the kill lands in training
    overrides = [f"artifacts.root={root}", *DEMO_SETTINGS, "train.epochs=25", "train.seed=5"]
    params = ("--param", f"overrides={json.dumps(overrides)}")
    serve = next(p for p in processes.started if "serve" in p.args)
    processes.run(str(BIN / "prefect"), "deployment", "run", f"neggen/{FULL}", *params)
    staging = Path(root, "demo-small", "train")
    wait(
        "training to start",
        lambda: any(staging.glob(".staging-*/checkpoint.pt")),
        240,
        Path(processes.logs),
    )
    processes.kill(serve)
    time.sleep(3)
    assert any(staging.glob(".staging-*/checkpoint.pt")), "the run was not interrupted"
    assert not store_has_train(root, overrides), "the run finished although its serve was killed"
    processes.start("serve-again", *serve_args)
    wait("the deployments served again", lambda: bool(api.deployments()), 120, processes.logs)
    assert "Completed" in _run_deployment(processes, FULL, *params)

    config = load_config(None, overrides)
    versions = plan_versions(config)
    store = open_store(config)
    resumed = store.read_frame(store.ref("evaluate", versions["evaluate"]), "metrics", METRICS)
    # the same config trained without interruption, in-process, in a fresh root
    fresh = load_config(None, [*overrides, f"artifacts.root={tmp_path}"])
    refs = {}
    for stage in STAGE_ORDER:
        if stage in ("train", "evaluate"):
            refs[stage] = run_stage(fresh, stage, refs).ref
        else:
            shutil.copytree(
                Path(root, "demo-small", stage, versions[stage]),
                tmp_path / "demo-small" / stage / versions[stage],
            )
            refs[stage] = open_store(fresh).ref(stage, versions[stage])
    uninterrupted = open_store(fresh).read_frame(refs["evaluate"], "metrics", METRICS)
    assert resumed.equals(uninterrupted)


def test_regenerate_negatives_is_scheduled_and_builds_a_new_round(
    served: tuple[Processes, Api, str, list[str]],
) -> None:
    processes, api, root, _ = served
    regenerate = api.deployments()[REGENERATE]
    default = load_config(None).orchestration.schedule
    [schedule] = regenerate["schedules"]
    assert schedule["schedule"]["cron"] == default.regenerate_cron
    assert schedule["schedule"]["timezone"] == default.timezone and schedule["active"]
    assert regenerate["parameters"]["regenerate_negatives"] is True

    data = Path(root, "demo-small")
    reused = {s: _files(data / s) for s in ("ingest", "attributes")}
    negatives_before = {p.name for p in (data / "negatives").iterdir()}
    evaluate_before = {p.name for p in (data / "evaluate").iterdir()}
    assert "Completed" in _run_deployment(processes, REGENERATE)
    assert {s: _files(data / s) for s in ("ingest", "attributes")} == reused
    [new] = {p.name for p in (data / "negatives").iterdir()} - negatives_before
    assert len({p.name for p in (data / "evaluate").iterdir()} - evaluate_before) == 1
    store = open_store(load_config(None, [f"artifacts.root={root}"]))
    rounds = store.read_frame(store.ref("negatives", new), "negatives", NEGATIVES)["round"]
    assert rounds.unique().to_list() == [2]  # the demo config's round is 1


def test_prefect_yaml_declares_the_served_deployments() -> None:
    declared = yaml.safe_load((REPO / "prefect.yaml").read_text())
    deployments = {d["name"]: d for d in declared["deployments"]}
    assert set(deployments) == {FULL, REGENERATE}
    # the schedule and the default parameters come from the build step's config at deploy time
    # (tests/flow/test_deploy.py deploys it and checks the result)
    [build] = declared["build"]
    step = build["flows.deployments.deploy_values"]
    assert step["id"] == "neggen"
    load_config(REPO / step["config"])
    assert deployments[REGENERATE]["schedules"] == [
        {"cron": "{{ neggen.cron }}", "timezone": "{{ neggen.timezone }}"}
    ]
    assert deployments[REGENERATE]["parameters"]["regenerate_negatives"] is True
    for deployment in deployments.values():
        module, _, name = deployment["entrypoint"].partition(":")
        assert (REPO / module).is_file() and f"def {name}(" in (REPO / module).read_text()
        assert deployment["parameters"]["config_path"] == "{{ neggen.config_path }}"
        assert deployment["parameters"]["overrides"] == "{{ neggen.overrides }}"


def test_serve_without_a_prefect_api_says_how_to_start_one(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(BIN / "neggen"), "serve"],
        cwd=tmp_path,
        env=prefect_env(tmp_path / "prefect-home", None),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "PREFECT_API_URL is not set" in done.stderr
    assert "prefect server start" in done.stderr and "Traceback" not in done.stderr
    unreachable = prefect_env(tmp_path / "prefect-home", f"http://127.0.0.1:{free_port()}/api")
    done = subprocess.run(
        [str(BIN / "neggen"), "serve"],
        cwd=tmp_path,
        env=unreachable,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "does not answer" in done.stderr, done.stderr
    assert "prefect server start" in done.stderr


def test_sigterm_stops_serve_without_a_traceback(
    served: tuple[Processes, Api, str, list[str]],
) -> None:
    """Last here: it stops the fixture's (latest) `neggen serve`, which pauses the schedules."""
    processes, api, _, _ = served
    serve = [p for p in processes.started if "serve" in p.args][-1]
    assert serve.poll() is None
    before = len(processes.output(serve))
    os.kill(serve.pid, signal.SIGTERM)
    assert serve.wait(timeout=60) == 0
    out = processes.output(serve)
    assert f"prefect deployment run neggen/{FULL}" in out  # the hint printed at the start
    after = out[before:]
    assert "SIGTERM received" in after and "Traceback" not in after, after
    assert after.rstrip().endswith("neggen serve: stopped"), after
    assert api.deployments()[REGENERATE]["paused"]  # Prefect's runner pauses what it served
