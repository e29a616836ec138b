"""Where torch runs: `train.device` and `embeddings.device` name `auto` (CUDA when torch sees
one, else the CPU), `cpu`, `cuda` or `cuda:N`. The device is not part of any version: it changes
how fast a result comes, not what it is (up to floating-point order on a GPU)."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from neggen_core.config import NeggenConfig
from neggen_core.errors import ConfigError


def resolve(setting: str, key: str) -> torch.device:
    """The torch device `setting` names; a `ConfigError` naming `key` where it is not there."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(setting)
    if device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise ConfigError(
            f"{key} is {setting}, but torch {torch.__version__} ({build}) sees no CUDA device "
            f"on this machine; set {key}: auto (CUDA where there is one, else the CPU) or cpu"
        )
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise ConfigError(
            f"{key} is {setting}, but this machine has {count} CUDA device(s) "
            f"(cuda:0 to cuda:{count - 1}); set {key} to one of them, or to auto"
        )
    return device


def check(config: NeggenConfig, stages: Iterable[str]) -> None:
    """Fail before anything runs where a device the given stages use is not on this machine."""
    stages = set(stages)
    if stages & {"negatives", "embeddings"}:
        resolve(config.embeddings.device, "embeddings.device")
    if stages & {"train", "evaluate"}:
        resolve(config.train.device, "train.device")
