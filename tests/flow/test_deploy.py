"""`prefect.yaml` for real, from a plain checkout: a Prefect server on a free loopback port, a
process work pool, `prefect deploy --all` run in a copy of the checkout's deployment files (no
/opt/neggen anywhere), a process worker, and a run of `neggen/full` into a temp artifact root;
then the schedule, the default parameters and the pull steps the deploy derived. Every process
started here is stopped here."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.deployments import FULL, REGENERATE, deploy_values
from neggen_core.config import load_config
from neggen_core.pipeline.stages import open_store, plan_versions
from tests.support.helpers import DEMO_SETTINGS, REPO, copy_data_stages
from tests.support.prefect_processes import BIN, Api, Processes, free_port, prefect_env, wait

POOL = "neggen-pool"
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Processes, Api, Path]]:
    """Both deployments of prefect.yaml deployed from a copy of the checkout's prefect.yaml,
    flows/ and configs/ (the package itself is the installed one, as on any host), with a
    process worker polling their pool: (processes, API, the copy)."""
    tmp = tmp_path_factory.mktemp("deployed")
    checkout = tmp / "checkout"
    checkout.mkdir()
    shutil.copy2(REPO / "prefect.yaml", checkout)
    for folder in ("flows", "configs"):
        shutil.copytree(
            REPO / folder, checkout / folder, ignore=shutil.ignore_patterns("__pycache__")
        )
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = prefect_env(tmp / "prefect-home", url) | {
        "PREFECT_CLI_PROMPT": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
    }
    processes = Processes(env, tmp, cwd=checkout)
    api = Api(url)
    try:
        processes.start_server(port, api)
        prefect = str(BIN / "prefect")
        for command in (
            ("work-pool", "create", POOL, "--type", "process"),
            ("--no-prompt", "deploy", "--all"),
        ):
            done = processes.run(prefect, *command, timeout=300)
            assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        processes.start("worker", prefect, "worker", "start", "--pool", POOL, "--type", "process")
        yield processes, api, checkout
    finally:
        processes.stop_all()


def test_full_deployment_runs_on_a_process_worker_from_a_plain_checkout(
    deployed: tuple[Processes, Api, Path], demo_built: tuple[str, dict[str, object]]
) -> None:
    processes, api, checkout = deployed
    root = processes.logs / "artifacts"
    copy_data_stages(demo_built[0], root)
    overrides = [f"artifacts.root={root}", *DEMO_SETTINGS]
    done = processes.run(
        str(BIN / "prefect"),
        "deployment",
        "run",
        f"neggen/{FULL}",
        "--param",
        f"overrides={json.dumps(overrides)}",
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    deployment = api.deployments()[FULL]["id"]

    def finished() -> bool:
        return any(r["state"]["type"] in TERMINAL for r in api.runs(deployment))

    wait("the flow run to finish", finished, 300, processes.logs)
    [run] = api.runs(deployment)
    assert run["state"]["type"] == "COMPLETED", processes.output(processes.started[-1])[-4000:]
    # the default config_path, configs/demo.yaml, was read in the copy: the worker ran there
    config = load_config(checkout / "configs" / "demo.yaml", overrides)
    assert open_store(config).exists("evaluate", plan_versions(config)["evaluate"])


def test_deploy_takes_the_schedule_and_defaults_from_the_config(
    deployed: tuple[Processes, Api, Path],
) -> None:
    _, api, checkout = deployed
    deployments = api.deployments()
    schedule = load_config(checkout / "configs" / "demo.yaml").orchestration.schedule
    [regenerate] = deployments[REGENERATE]["schedules"]
    assert regenerate["schedule"]["cron"] == schedule.regenerate_cron
    assert regenerate["schedule"]["timezone"] == schedule.timezone and regenerate["active"]
    assert deployments[REGENERATE]["parameters"]["regenerate_negatives"] is True
    for name in (FULL, REGENERATE):
        parameters = deployments[name]["parameters"]
        assert parameters["config_path"] == "configs/demo.yaml", name
        assert parameters["overrides"] == [], name  # no NEGGEN_ARTIFACTS_ROOT: the config's root
        assert deployments[name]["work_pool_name"] == POOL


def test_the_pull_steps_run_the_flow_in_neggen_home_else_where_it_was_deployed(
    deployed: tuple[Processes, Api, Path], tmp_path: Path
) -> None:
    """The worker's side of the pull steps, as a flow run's process runs them: $NEGGEN_HOME
    is read when the run starts (the image sets /opt/neggen), not when it was deployed."""
    processes, api, checkout = deployed
    steps = json.dumps(api.deployments()[FULL]["pull_steps"])
    script = (
        "import asyncio, json, os, sys\n"
        "from prefect.deployments.steps.core import run_steps\n"
        "asyncio.run(run_steps(json.loads(sys.argv[1]), print_function=lambda *a, **k: None))\n"
        "print(os.getcwd())\n"
    )
    home = tmp_path / "home"
    home.mkdir()
    for extra, expected in (({}, checkout), ({"NEGGEN_HOME": str(home)}, home)):
        done = subprocess.run(
            [sys.executable, "-c", script, steps],
            cwd=tmp_path,
            env=processes.env | extra,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.strip().splitlines()[-1] == str(expected), (extra, done.stdout)


def test_deploy_values_read_the_deploy_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "mine.yaml"
    config.write_text(
        "orchestration:\n  schedule:\n    regenerate_cron: '30 4 * * *'\n"
        "    timezone: Europe/Berlin\n"
    )
    monkeypatch.chdir(tmp_path)
    for variable in ("NEGGEN_CONFIG", "NEGGEN_ARTIFACTS_ROOT"):
        monkeypatch.delenv(variable, raising=False)
    demo = load_config(REPO / "configs" / "demo.yaml").orchestration.schedule
    assert deploy_values(str(REPO / "configs" / "demo.yaml")) == {
        "config_path": str(REPO / "configs" / "demo.yaml"),
        "cron": demo.regenerate_cron,
        "timezone": demo.timezone,
        "overrides": [],
        "home": str(tmp_path),
    }
    monkeypatch.setenv("NEGGEN_CONFIG", "mine.yaml")
    monkeypatch.setenv("NEGGEN_ARTIFACTS_ROOT", "/data/artifacts")
    assert deploy_values("configs/demo.yaml") == {
        "config_path": "mine.yaml",
        "cron": "30 4 * * *",
        "timezone": "Europe/Berlin",
        "overrides": ["artifacts.root=/data/artifacts"],
        "home": str(tmp_path),
    }
