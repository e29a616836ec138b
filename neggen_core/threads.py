"""How many threads the numeric libraries may use in a worker that shares its machine with
other workers: set once per task by the orchestration, read by torch and the OpenVINO encoder."""

from __future__ import annotations

import os

import torch

from neggen_core.config import TaskRunnerConfig

_budget: int | None = None


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def worker_threads(settings: TaskRunnerConfig) -> int:
    """Threads per worker: `torch_threads`, or the cores over the workers sharing them."""
    return settings.torch_threads or max(1, cores() // settings.max_workers)


def use_threads(threads: int) -> None:
    """Let torch, and encoders compiled from now on in this process, use `threads` threads."""
    global _budget
    _budget = threads
    torch.set_num_threads(threads)


def budget() -> int | None:
    """The threads `use_threads` allowed this process; None: each library's own default."""
    return _budget
