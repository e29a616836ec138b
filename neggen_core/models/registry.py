"""Models and samplers by the names the config allows (`train.model`, `train.backbone` and
`train.sampler` are checked when the config loads), and the name results give a trained
configuration."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from neggen_core import devices
from neggen_core.config import BackboneName, ModelName, SamplerName, TrainConfig
from neggen_core.data import ItemFeatures, TrainingData
from neggen_core.errors import ConfigError
from neggen_core.models.backbones import MF, Backbone, LightGCN, normalized_adjacency
from neggen_core.models.base import Recommender
from neggen_core.models.multimodal import VBPR, Freedom
from neggen_core.models.neggen import NegGen
from neggen_core.models.samplers import AHNS, DNS, RNS, MixGCF, Sampler


def _features(name: str, data: TrainingData) -> ItemFeatures:
    if data.features is None:
        raise ConfigError(f"{name} needs the items' modal features (the embeddings stage's)")
    return data.features


def _backbone(name: str, settings: TrainConfig, data: TrainingData) -> Backbone:
    common = (data.n_users, data.n_items, settings.embedding_size, settings.reg_weight)
    if name == "mf":
        return MF(*common, seed=settings.seed)
    if name == "vbpr":
        return VBPR(*common, seed=settings.seed, features=_features(name, data).item_modal)
    if name == "freedom":
        features = _features(name, data)
        return Freedom(
            data.n_users,
            data.n_items,
            settings.embedding_size,
            settings.seed,
            data.train_users,
            data.train_items,
            features.item_modal,
            features.item_present,
            settings.freedom,
            features.names,
        )
    adjacency = normalized_adjacency(data.n_users, data.n_items, data.train_users, data.train_items)
    return LightGCN(*common, seed=settings.seed, adjacency=adjacency, n_layers=settings.n_layers)


def _neggen(settings: TrainConfig, data: TrainingData) -> Recommender:
    backbone = BACKBONES[settings.backbone]
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


BACKBONES: dict[BackboneName, Callable[[str, TrainConfig, TrainingData], Backbone]] = {
    "mf": _backbone,
    "lightgcn": _backbone,
    "vbpr": _backbone,
    "freedom": _backbone,
}
MODELS: dict[ModelName, Callable[[TrainConfig, TrainingData], Recommender]] = {
    "mf": lambda settings, data: _backbone("mf", settings, data),
    "lightgcn": lambda settings, data: _backbone("lightgcn", settings, data),
    "vbpr": lambda settings, data: _backbone("vbpr", settings, data),
    "freedom": lambda settings, data: _backbone("freedom", settings, data),
    "neggen": _neggen,
}
NEGGEN_SAMPLERS = ("rns", "dns", "ahns")  # samplers of real items (MixGCF mixes embeddings)
SAMPLERS: dict[SamplerName, Callable[[TrainConfig, TrainingData], Sampler]] = {
    "rns": lambda settings, data: RNS(data),
    "dns": lambda settings, data: DNS(data, settings.samplers.dns.pool),
    "mixgcf": lambda settings, data: MixGCF(
        data, settings.samplers.mixgcf.pool, settings.samplers.mixgcf.hop_scoring
    ),
    "ahns": lambda settings, data: AHNS(data, settings.samplers.ahns),
}


def build_model(settings: TrainConfig, data: TrainingData) -> Recommender:
    """The model, built on the CPU (the same seeded start everywhere), on `train.device`."""
    model = MODELS[settings.model](settings, data)
    return model.to(devices.resolve(settings.device, "train.device"))


def build_sampler(settings: TrainConfig, data: TrainingData) -> Sampler:
    return SAMPLERS[settings.sampler](settings, data)


@dataclass(frozen=True)
class MethodId:
    """What results call a trained configuration: a backbone trained with a real-negative
    sampler, or NegGen (with an ablation, or "none") on the backbone taking that sampler's
    negatives."""

    backbone: str
    sampler: str
    neggen: bool = False
    ablation: str = "none"

    @classmethod
    def of(cls, settings: TrainConfig) -> MethodId:
        if settings.model == "neggen":
            return cls(settings.backbone, settings.sampler, True, settings.neggen.ablation)
        return cls(settings.model, settings.sampler)

    @property
    def label(self) -> str:
        """`lightgcn+rns`, `neggen(lightgcn)+rns`, `neggen(lightgcn)[no_causal]+rns`."""
        if not self.neggen:
            return f"{self.backbone}+{self.sampler}"
        ablation = "" if self.ablation == "none" else f"[{self.ablation}]"
        return f"neggen({self.backbone}){ablation}+{self.sampler}"
