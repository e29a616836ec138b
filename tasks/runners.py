"""The task runner `orchestration.task_runner` names: a thread or process pool on this machine,
or a Dask or Ray cluster (local to the flow run, or one at an address)."""

from __future__ import annotations

from typing import Any

from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner

from neggen_core.config import TaskRunnerConfig
from neggen_core.errors import ConfigError


def task_runner(settings: TaskRunnerConfig) -> TaskRunner[Any]:
    """The configured task runner, not started."""
    if settings.kind == "thread":
        return ThreadPoolTaskRunner(max_workers=settings.max_workers)
    if settings.kind == "process":
        return ProcessPoolTaskRunner(max_workers=settings.max_workers)
    extra = settings.kind
    try:
        if settings.kind == "dask":
            from prefect_dask import DaskTaskRunner

            if settings.address:
                return DaskTaskRunner(address=settings.address)
            return DaskTaskRunner(
                cluster_kwargs={"n_workers": settings.max_workers, "threads_per_worker": 1}
            )
        from prefect_ray import RayTaskRunner

        if settings.address:
            return RayTaskRunner(address=settings.address)
        return RayTaskRunner(init_kwargs={"num_cpus": settings.max_workers})
    except ImportError as exc:
        raise ConfigError(
            f"orchestration.task_runner.kind={extra} needs prefect-{extra}: "
            f"pip install 'neggen[{extra}]' (or set orchestration.task_runner.kind=thread)"
        ) from exc
