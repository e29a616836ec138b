"""What the train stage promises: its tables and files, what its version depends on, and the
readers its consumers use (the trained model's state, the training log and the best epoch).
Also what a config's training reads from ingest and embeddings (`training_data`): evaluate
ranks with the same data, so it is read in one place, through those stages' contracts."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import polars as pl
import pyarrow.compute as pc
import torch

from neggen_core.artifacts.schemas import TRAINING_LOG
from neggen_core.artifacts.store import ArtifactRef, ArtifactStore
from neggen_core.config import NeggenConfig
from neggen_core.data import ItemFeatures, TrainingData, item_features, split_data
from neggen_core.embeddings.contract import read_embeddings
from neggen_core.errors import ArtifactError
from neggen_core.ingest.contract import item_count, read_interactions, user_count

UPSTREAM = ("ingest", "embeddings")  # a config may read fewer: `reads`
SCHEMA_VERSION = 1
TRAINER_VERSION = 3  # bump when training's results change for the same config
TABLES = {"training_log": TRAINING_LOG}
MODEL_FILE = "model.pt"
CHECKPOINT_FILE = "checkpoint.pt"


def reads(config: NeggenConfig) -> tuple[str, ...]:
    """NegGen reads the modal features and the generated negatives (embeddings); a baseline
    reads only the interactions."""
    return ("ingest", "embeddings") if config.train.model == "neggen" else ("ingest",)


def version_config(config: NeggenConfig) -> dict[str, Any]:
    """The settings a run uses: a baseline's leave out NegGen's (and its backbone), and only
    the sampler in use keeps its settings."""
    train = config.train.model_dump(mode="json")
    if config.train.model != "neggen":
        del train["neggen"], train["backbone"]
    train["samplers"] = {
        name: value for name, value in train["samplers"].items() if name == config.train.sampler
    }
    return {
        "train": train,
        "evaluate": config.evaluate.model_dump(mode="json"),
        "trainer_version": TRAINER_VERSION,
    }


def training_data(
    config: NeggenConfig, store: ArtifactStore, upstream: Mapping[str, ArtifactRef]
) -> TrainingData:
    """The split, and the modal features when the model uses them."""
    features = upstream["embeddings"] if config.train.model == "neggen" else None
    settings = config.train.neggen
    return load_training_data(
        store,
        upstream["ingest"],
        features,
        skip_flagged=settings.skip_possible_false_negatives,
        negatives="control" if settings.ablation == "random_intervention" else "key",
    )


def load_features(
    store: ArtifactStore,
    embeddings: ArtifactRef,
    n_items: int,
    skip_flagged: bool,
    kind: str = "key",
) -> ItemFeatures:
    """The items' modal features and the generated negatives of `kind` (key, or control: the
    negatives that change attributes that are not key features)."""
    items = read_embeddings(store, embeddings, "item_embeddings")
    if items.num_rows != n_items:
        raise ArtifactError(f"{embeddings.uri}: {items.num_rows} item rows, expected {n_items}")
    negatives = read_embeddings(store, embeddings, "negative_embeddings")
    if kind != "key" and not pc.any(pc.equal(negatives.column("kind"), kind)).as_py():
        raise ArtifactError(
            f"{embeddings.uri}: no {kind} negatives; build them with negatives.controls: true "
            "(the random_intervention ablation trains on them)"
        )
    return item_features(items, negatives, kind, skip_flagged)


def load_training_data(
    store: ArtifactStore,
    ingest: ArtifactRef,
    embeddings: ArtifactRef | None,
    skip_flagged: bool = True,
    negatives: str = "key",
) -> TrainingData:
    """The split of `ingest`, and the modal features of `embeddings` (with the generated
    negatives of kind `negatives`) when given."""
    n_users, n_items = user_count(store, ingest), item_count(store, ingest)
    features = None
    if embeddings is not None:
        features = load_features(store, embeddings, n_items, skip_flagged, negatives)
    try:
        return split_data(read_interactions(store, ingest), n_users, n_items, features)
    except ValueError as exc:
        raise ArtifactError(f"{ingest.uri}: {exc}") from exc


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
    loaded = torch.load(io.BytesIO(data), weights_only=True)
    assert isinstance(loaded, dict)
    return loaded
