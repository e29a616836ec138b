"""The process pool's workers report to the flow run's own Prefect API; a local Dask cluster's
workers keep glibc's own memory trimming."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from distributed import Client, LocalCluster

from neggen_core.config import TaskRunnerConfig
from tasks.runners import task_runner
from tests.support.helpers import REPO

PROBE = """
import json, os
from prefect import flow, task
from neggen_core.config import TaskRunnerConfig
from tasks.runners import task_runner, temporary_server_url

@task
def where() -> dict:
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import get_current_settings
    url = get_current_settings().api.url
    return {"url": url, "own_server": SubprocessASGIServer().running, "pid": os.getpid()}

@flow
def probe() -> dict:
    with task_runner(TaskRunnerConfig(kind="process", max_workers=1)) as runner:
        worker = runner.submit(where, {}).result()
    return {"server": temporary_server_url(), "worker": worker, "pid": os.getpid()}

if __name__ == "__main__":
    print(json.dumps(probe()))
"""


def test_process_workers_use_the_flow_runs_temporary_server(tmp_path: Path) -> None:
    """Without PREFECT_API_URL a flow run starts Prefect's temporary server; the pool's
    workers are given its URL instead of each starting one of their own (10-20 s each)."""
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
        "PYTHONPATH": str(REPO),
    }
    done = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    worker = result["worker"]
    assert result["server"] is not None and worker["pid"] != result["pid"]
    assert worker["url"] == result["server"] and not worker["own_server"]
    assert (done.stdout + done.stderr).count("Starting temporary server") == 1


def _trim_threshold(cluster: LocalCluster) -> list[str | None]:
    with cluster, Client(cluster) as client:
        return list(client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_")).values())


def test_a_local_dask_cluster_keeps_glibc_s_own_memory_trimming(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Dask's workers set MALLOC_TRIM_THRESHOLD_=65536, which fixes glibc's mmap threshold too:
    torch's large tensors are then unmapped when freed and faulted in again when the next is
    made, and a 10-epoch Office run took twice as long as in a process pool. The cluster that
    `orchestration.task_runner.kind: dask` starts leaves it unset."""
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    kwargs = {"n_workers": 1, "threads_per_worker": 1, "dashboard_address": None}
    runner = task_runner(TaskRunnerConfig(kind="dask", max_workers=1))
    assert _trim_threshold(runner.cluster_class(**{**runner.cluster_kwargs, **kwargs})) == [None]
    try:
        assert _trim_threshold(LocalCluster(**kwargs)) == ["65536"]  # Dask's default
    finally:
        os.environ.pop("MALLOC_TRIM_THRESHOLD_", None)  # set in this process by Dask's nanny
