"""Models and samplers by name, with a clear error for an unknown one."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

from neggen_core.config import TrainConfig
from neggen_core.errors import ConfigError
from neggen_core.models.backbones import MF, Backbone, LightGCN, normalized_adjacency
from neggen_core.models.base import Recommender
from neggen_core.models.neggen import NegGen
from neggen_core.models.samplers import AHNS, DNS, RNS, MixGCF, Sampler
from neggen_core.training.data import TrainingData

T = TypeVar("T")


def _backbone(name: str, settings: TrainConfig, data: TrainingData) -> Backbone:
    common = (data.n_users, data.n_items, settings.embedding_size, settings.reg_weight)
    if name == "mf":
        return MF(*common, seed=settings.seed)
    adjacency = normalized_adjacency(data.n_users, data.n_items, data.train_users, data.train_items)
    return LightGCN(*common, seed=settings.seed, adjacency=adjacency, n_layers=settings.n_layers)


def _neggen(settings: TrainConfig, data: TrainingData) -> Recommender:
    backbone = _pick(BACKBONES, settings.backbone, "train.backbone")
    if data.features is None:
        raise ConfigError("train.model neggen needs the embeddings stage's features")
    if settings.sampler not in NEGGEN_SAMPLERS:
        raise ConfigError(
            f"train.sampler {settings.sampler} mixes embeddings, not items; NegGen takes "
            + ", ".join(NEGGEN_SAMPLERS)
        )
    return NegGen(
        backbone(settings.backbone, settings, data), data.features, settings.neggen, settings.seed
    )


BACKBONES: dict[str, Callable[[str, TrainConfig, TrainingData], Backbone]] = {
    "mf": _backbone,
    "lightgcn": _backbone,
}
MODELS: dict[str, Callable[[TrainConfig, TrainingData], Recommender]] = {
    "mf": lambda settings, data: _backbone("mf", settings, data),
    "lightgcn": lambda settings, data: _backbone("lightgcn", settings, data),
    "neggen": _neggen,
}
NEGGEN_SAMPLERS = ("rns", "dns", "ahns")  # samplers of real items (MixGCF mixes embeddings)
SAMPLERS: dict[str, Callable[[TrainConfig, TrainingData], Sampler]] = {
    "rns": lambda settings, data: RNS(data),
    "dns": lambda settings, data: DNS(data, settings.samplers.dns.pool),
    "mixgcf": lambda settings, data: MixGCF(
        data, settings.samplers.mixgcf.pool, settings.samplers.mixgcf.hop_scoring
    ),
    "ahns": lambda settings, data: AHNS(data, settings.samplers.ahns),
}


def _pick(registry: Mapping[str, T], name: str, key: str) -> T:
    if name not in registry:
        raise ConfigError(f"{key} {name!r}: unknown (known: {', '.join(sorted(registry))})")
    return registry[name]


def build_model(settings: TrainConfig, data: TrainingData) -> Recommender:
    return _pick(MODELS, settings.model, "train.model")(settings, data)


def build_sampler(settings: TrainConfig, data: TrainingData) -> Sampler:
    return _pick(SAMPLERS, settings.sampler, "train.sampler")(settings, data)


def check_names(settings: TrainConfig) -> None:
    """Fail early (before any stage runs) on an unknown model, backbone or sampler name."""
    _pick(MODELS, settings.model, "train.model")
    _pick(BACKBONES, settings.backbone, "train.backbone")
    _pick(SAMPLERS, settings.sampler, "train.sampler")


def method_name(settings: TrainConfig) -> str:
    """How results name this configuration: lightgcn+rns, neggen(lightgcn)+rns[no_causal]."""
    model = settings.model
    if model == "neggen":
        model = f"neggen({settings.backbone})"
        if settings.neggen.ablation != "none":
            model += f"[{settings.neggen.ablation}]"
    return f"{model}+{settings.sampler}"
