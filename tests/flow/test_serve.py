"""Production use, for real: `prefect server start`, `neggen serve`, `prefect deployment run
neggen/full --watch`, a second run that skips, a served run killed and run again, and the
scheduled `regenerate-negatives` deployment; every process started here is stopped here."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from flows.deployments import FULL, REGENERATE
from neggen_core.artifacts.schemas import METRICS, NEGATIVES
from neggen_core.artifacts.store import LOCKS
from neggen_core.config import load_config
from neggen_core.pipeline.run import run_stage
from neggen_core.pipeline.stages import STAGE_ORDER, open_store, plan_versions
from tests.support.helpers import DEMO_SETTINGS, REPO

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Processes:
    """Background processes in their own sessions, killed (with their children) at the end."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, *command: str) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}.log").open("ab") as sink:
            process = subprocess.Popen(
                command, cwd=REPO, env=self.env, stdout=sink, stderr=sink, start_new_session=True
            )
        self.started.append(process)
        return process

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    def stop_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.started:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def run(self, *command: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command, cwd=REPO, env=self.env, capture_output=True, text=True, timeout=timeout
        )


class Api:
    def __init__(self, url: str) -> None:
        self.url = url

    def post(self, path: str, body: dict[str, Any]) -> Any:
        request = urllib.request.Request(
            f"{self.url}{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            return json.load(reply)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as reply:
                return reply.status == 200
        except OSError:
            return False

    def deployments(self) -> dict[str, Any]:
        return {d["name"]: d for d in self.post("/deployments/filter", {})}


def _wait(what: str, check: Any, timeout: float, logs: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    tails = {p.name: p.read_text(errors="replace")[-2000:] for p in logs.glob("*.log")}
    raise AssertionError(f"timed out waiting for {what}: {tails}")


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, demo_built: tuple[str, dict[str, object]]
) -> Iterator[tuple[Processes, Api, str, list[str]]]:
    """A Prefect server on a free loopback port and `neggen serve` against it, on the demo
    config whose data stages the session already built (copied, not shared)."""
    tmp = tmp_path_factory.mktemp("served")
    root = tmp / "artifacts"
    for stage in ("ingest", "attributes", "negatives", "embeddings"):
        shutil.copytree(Path(demo_built[0], "demo-small", stage), root / "demo-small" / stage)
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")} | {
        "PREFECT_HOME": str(tmp / "prefect-home"),
        "PREFECT_API_URL": url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_API_PORT": str(port),
    }
    processes = Processes(env, tmp)
    overrides = [f"artifacts.root={root}", *DEMO_SETTINGS]
    api = Api(url)
    try:
        processes.start(
            "server",
            str(BIN / "prefect"),
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        )
        _wait("the Prefect server", api.healthy, 120, tmp)
        serve_args = [str(BIN / "neggen"), "serve", *(f"--set={o}" for o in overrides)]
        processes.start("serve", *serve_args)
        _wait("both deployments", lambda: {FULL, REGENERATE} <= set(api.deployments()), 120, tmp)
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
    _wait(
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
    _wait("the deployments served again", lambda: bool(api.deployments()), 120, processes.logs)
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
    default = load_config(None).orchestration.schedule
    assert deployments[REGENERATE]["schedules"] == [
        {"cron": default.regenerate_cron, "timezone": default.timezone}
    ]
    assert deployments[REGENERATE]["parameters"]["regenerate_negatives"] is True
    for deployment in deployments.values():
        module, _, name = deployment["entrypoint"].partition(":")
        assert (REPO / module).is_file() and f"def {name}(" in (REPO / module).read_text()
        load_config(
            REPO / deployment["parameters"]["config_path"],
            list(deployment["parameters"]["overrides"]),
        )
