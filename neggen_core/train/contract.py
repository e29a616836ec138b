"""What the train stage promises: its tables and files, what its version depends on, and the
readers its consumers use (the trained model's state, the training log and the best epoch).
Also what a config's training reads from ingest and embeddings (`training_data`): evaluate
ranks with the same data, so it is read in one place, through those stages' contracts.

NegGen's per-user choice of generated negatives also reads the negatives' interventions and
the items' attributes and categories: from the attributes and negatives artifacts that the
embeddings artifact was built from (its manifest names them), so the train stage's upstream
stays ingest and embeddings, whose version already pins both."""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import polars as pl
import pyarrow.compute as pc
import torch

from neggen_core.artifacts.schemas import TRAINING_LOG
from neggen_core.artifacts.store import ArtifactRef, ArtifactStore
from neggen_core.attributes.contract import item_categories, read_attributes
from neggen_core.config import MULTIMODAL_BACKBONES, NeggenConfig
from neggen_core.data import (
    ItemFeatures,
    NegativeChoices,
    TrainingData,
    UserItems,
    item_features,
    negative_choices,
    split_data,
)
from neggen_core.embeddings.contract import read_embeddings
from neggen_core.errors import ArtifactError
from neggen_core.ingest.contract import item_count, read_interactions, read_items, user_count
from neggen_core.models.neggen import unread_settings
from neggen_core.negatives.contract import read_negatives

UPSTREAM = ("ingest", "embeddings")  # a config may read fewer: `reads`
SCHEMA_VERSION = 2  # 2: training_log.generated_fallback_share
TRAINER_VERSION = 4  # bump when training's results change for the same config (4: per_user)
TABLES = {"training_log": TRAINING_LOG}
MODEL_FILE = "model.pt"
CHECKPOINT_FILE = "checkpoint.pt"


def reads(config: NeggenConfig) -> tuple[str, ...]:
    """NegGen reads the modal features and the generated negatives, VBPR and FREEDOM the modal
    features (embeddings); MF and LightGCN only the interactions."""
    return ("ingest", "embeddings") if reads_features(config) else ("ingest",)


def reads_features(config: NeggenConfig) -> bool:
    return config.train.model == "neggen" or config.train.backbone_in_use in MULTIMODAL_BACKBONES


def version_config(config: NeggenConfig) -> dict[str, Any]:
    """The settings a run uses: a baseline's leave out NegGen's (and its backbone), NegGen's
    those its ablation never reads (`real_only`: the generated negatives'), only the sampler in
    use keeps its settings, and FREEDOM's only where FREEDOM trains."""
    train = config.train.model_dump(mode="json", exclude={"device"})
    if config.train.model != "neggen":
        del train["neggen"], train["backbone"]
    else:
        unread = set(unread_settings(config.train.neggen))
        if not config.train.neggen.virtual_node:
            unread.add("virtual_node")  # off: the versions of before it existed
        train["neggen"] = {k: v for k, v in train["neggen"].items() if k not in unread}
    if config.train.backbone_in_use != "freedom":
        del train["freedom"]
    train["samplers"] = {
        name: value for name, value in train["samplers"].items() if name == config.train.sampler
    }
    return {
        "train": train,
        "evaluate": config.evaluate.model_dump(mode="json"),
        "trainer_version": TRAINER_VERSION,
    }


def training_data(
    config: NeggenConfig,
    store: ArtifactStore,
    upstream: Mapping[str, ArtifactRef],
    for_training: bool = False,
) -> TrainingData:
    """The split, and the modal features when the model uses them (with the generated
    negatives for NegGen, but for its `real_only` ablation); `for_training` also the arrays of
    the per-user choice of generated negatives when the config makes one (ranking does not need
    them)."""
    settings = config.train.neggen
    generated = config.train.model == "neggen" and settings.ablation != "real_only"
    negatives = "control" if settings.ablation == "random_intervention" else "key"
    return load_training_data(
        store,
        upstream["ingest"],
        upstream["embeddings"] if reads_features(config) else None,
        skip_flagged=settings.skip_possible_false_negatives,
        negatives=negatives if generated else None,
        choices=generated and for_training and settings.negative_choice == "per_user",
    )


def load_features(
    store: ArtifactStore,
    embeddings: ArtifactRef,
    n_items: int,
    skip_flagged: bool,
    kind: str | None = "key",
) -> ItemFeatures:
    """The items' modal features and the generated negatives of `kind` (key, or control: the
    negatives that change attributes that are not key features; None: no negative)."""
    items = read_embeddings(store, embeddings, "item_embeddings")
    if items.num_rows != n_items:
        raise ArtifactError(f"{embeddings.uri}: {items.num_rows} item rows, expected {n_items}")
    if kind is None:
        return item_features(items, None)
    negatives = read_embeddings(store, embeddings, "negative_embeddings")
    if kind != "key" and not pc.any(pc.equal(negatives.column("kind"), kind)).as_py():
        raise ArtifactError(
            f"{embeddings.uri}: no {kind} negatives; build them with negatives.controls: true "
            "(the random_intervention ablation trains on them)"
        )
    return item_features(items, negatives, kind, skip_flagged)


def _built_from(store: ArtifactStore, embeddings: ArtifactRef, stage: str) -> ArtifactRef:
    """The `stage` artifact the embeddings artifact was built from, checked intact."""
    version = store.manifest(embeddings.stage, embeddings.version).upstream.get(stage)
    if version is None:
        raise ArtifactError(f"{embeddings.uri}: its manifest names no {stage} artifact")
    ref = store.ref(stage, version)
    problems = store.verify(stage, version)
    if problems:
        raise ArtifactError(
            f"{ref.uri} is damaged: {problems[0]}. Rebuild it with "
            f"`neggen run --rebuild {stage}` (or remove that folder)"
        )
    return ref


def load_choices(
    store: ArtifactStore,
    ingest: ArtifactRef,
    embeddings: ArtifactRef,
    features: ItemFeatures,
    train: UserItems,
) -> NegativeChoices:
    """The per-user choice arrays of `features`' generated negatives: their interventions (the
    negatives artifact) and the values and categories of the items (the attributes artifact,
    at the category level it was built with) that the embeddings were built from."""
    attributes = _built_from(store, embeddings, "attributes")
    negatives = _built_from(store, embeddings, "negatives")
    settings = store.manifest(attributes.stage, attributes.version).config.get("attributes", {})
    if "category_level" not in settings:
        raise ArtifactError(f"{attributes.uri}: its manifest records no category_level")
    categories = item_categories(read_items(store, ingest), int(settings["category_level"]))
    try:
        return negative_choices(
            features.negative_ids,
            read_negatives(store, negatives),
            read_attributes(store, attributes),
            categories,
            train,
        )
    except ValueError as exc:
        raise ArtifactError(f"{embeddings.uri} against {negatives.uri}: {exc}") from exc


def load_training_data(
    store: ArtifactStore,
    ingest: ArtifactRef,
    embeddings: ArtifactRef | None,
    skip_flagged: bool = True,
    negatives: str | None = "key",
    choices: bool = True,
) -> TrainingData:
    """The split of `ingest`, and the modal features of `embeddings` (with the generated
    negatives of kind `negatives`, None for none) when given, with the arrays of the per-user
    choice among those negatives when `choices`."""
    n_users, n_items = user_count(store, ingest), item_count(store, ingest)
    features = None
    if embeddings is not None:
        features = load_features(store, embeddings, n_items, skip_flagged, negatives)
    try:
        data = split_data(read_interactions(store, ingest), n_users, n_items, features)
    except ValueError as exc:
        raise ArtifactError(f"{ingest.uri}: {exc}") from exc
    if features is None or embeddings is None or not choices:
        return data
    train = data.splits["train"]
    return replace(data, choices=load_choices(store, ingest, embeddings, features, train))


def read_training_log(store: ArtifactStore, ref: ArtifactRef) -> pl.DataFrame:
    """The `training_log` table: one row per epoch trained."""
    return store.read_frame(ref, "training_log", TRAINING_LOG)


def best_epoch(store: ArtifactStore, ref: ArtifactRef) -> int:
    """The epoch whose state the train artifact keeps (the best valid Recall@20)."""
    return int(store.manifest(ref.stage, ref.version).info["best_epoch"])


def model_state(store: ArtifactStore, ref: ArtifactRef) -> dict[str, Any]:
    """The trained model's best state (`model.pt` of a train artifact)."""
    return load_state(store.read_bytes(ref, MODEL_FILE))


def load_state(data: bytes) -> dict[str, Any]:
    """A checkpoint or a model file: tensors and plain values only (`weights_only=True`)."""
    loaded = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    assert isinstance(loaded, dict)
    return loaded
