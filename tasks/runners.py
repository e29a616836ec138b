"""The task runner `orchestration.task_runner` names: a thread or process pool on this machine,
or a Dask or Ray cluster (local to the flow run, or one at an address)."""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any, Self

from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner

from neggen_core.config import TaskRunnerConfig
from neggen_core.errors import ConfigError


def task_runner(settings: TaskRunnerConfig) -> TaskRunner[Any]:
    """The configured task runner, not started."""
    if settings.kind == "thread":
        return ThreadPoolTaskRunner(max_workers=settings.max_workers)
    if settings.kind == "process":
        return SharedApiProcessPool(max_workers=settings.max_workers)
    extra = settings.kind
    try:
        if settings.kind == "dask":
            from prefect_dask import DaskTaskRunner

            if settings.address:
                return DaskTaskRunner(address=settings.address)
            return DaskTaskRunner(
                cluster_class=local_dask_cluster,
                cluster_kwargs={"n_workers": settings.max_workers, "threads_per_worker": 1},
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


def local_dask_cluster(**kwargs: Any) -> Any:
    """A local Dask cluster whose workers keep glibc's own memory trimming. Dask sets
    MALLOC_TRIM_THRESHOLD_=65536 in the workers it spawns, which also fixes glibc's mmap
    threshold: every large tensor torch frees is unmapped, and the next one mapped and faulted
    in again (a 10-epoch Office run took 14.5 s there, 7.5 s in a process pool, 8.8 s without
    it)."""
    import dask
    from distributed import LocalCluster

    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
        return LocalCluster(**kwargs)


def temporary_server_url() -> str | None:
    """The API URL of the Prefect temporary server this process started (no PREFECT_API_URL
    set); None when there is none."""
    if get_current_settings().api.url:
        return None
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    return server.api_url if server.running else None


class SharedApiProcessPool(ProcessPoolTaskRunner):
    """Prefect's process pool whose workers report to the flow run's own API. Where the flow
    run started Prefect's temporary server (no PREFECT_API_URL), the workers are given its URL
    (the settings the pool hands them); otherwise each worker starts a temporary server of its
    own, 10 to 20 s of a core each, and its task runs are not in the flow run's API."""

    def __enter__(self) -> Self:
        self._shared_api = ExitStack()
        url = temporary_server_url()
        if url is not None:
            self._shared_api.enter_context(temporary_settings(updates={PREFECT_API_URL: url}))
        try:
            return super().__enter__()
        except BaseException:
            self._shared_api.close()
            raise

    def __exit__(self, *exc_info: Any) -> None:
        try:
            super().__exit__(*exc_info)
        finally:
            self._shared_api.close()
