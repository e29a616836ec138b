"""The train stage: a model trained on the train split, selected on valid Recall@20.

Writes `model.pt` (the best epoch's `state_dict`, for `torch.load(..., weights_only=True)`) and
the `training_log` table. While it runs, `checkpoint.pt` in the staging folder holds the last
finished epoch; a rerun after a kill resumes from it, and it is removed before the commit.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping
from typing import Any

import polars as pl
import torch

from neggen_core.artifacts.schemas import TRAINING_LOG
from neggen_core.artifacts.store import ArtifactRef, ArtifactStore, ArtifactWriter
from neggen_core.config import NeggenConfig
from neggen_core.evaluation.evaluator import Evaluator
from neggen_core.models.registry import build_model, build_sampler, method_name
from neggen_core.training.data import TrainingData, load_training_data
from neggen_core.training.trainer import fit

SCHEMA_VERSION = 1
TRAINER_VERSION = 3  # bump when training's results change for the same config
TABLES = {"training_log": TRAINING_LOG}
MODEL_FILE = "model.pt"
CHECKPOINT_FILE = "checkpoint.pt"

log = logging.getLogger(__name__)


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


class WriterCheckpoints:
    """The trainer's checkpoint, kept in the artifact's staging folder."""

    def __init__(self, writer: ArtifactWriter) -> None:
        self.writer = writer

    def load(self) -> bytes | None:
        return self.writer.read_bytes(CHECKPOINT_FILE)

    def save(self, data: bytes) -> None:
        self.writer.write_bytes(CHECKPOINT_FILE, data)


def build(
    config: NeggenConfig,
    store: ArtifactStore,
    upstream: Mapping[str, ArtifactRef],
    writer: ArtifactWriter,
) -> dict[str, Any]:
    data = training_data(config, store, upstream)
    model = build_model(config.train, data)
    sampler = build_sampler(config.train, data)
    evaluator = Evaluator(data, config.evaluate)
    method = method_name(config.train)

    def progress(row: dict[str, Any]) -> None:
        log.info(
            "%s epoch %d: loss %.4f, valid recall@20 %.4f (%.2f s + %.2f s)",
            method,
            row["epoch"],
            row["loss"],
            row["valid_recall_20"],
            row["train_seconds"],
            row["eval_seconds"],
        )

    result = fit(model, sampler, data, evaluator, config.train, WriterCheckpoints(writer), progress)
    buffer = io.BytesIO()
    torch.save(result.best_state, buffer)
    writer.write_bytes(MODEL_FILE, buffer.getvalue())
    frame = pl.DataFrame(result.log, schema=pl.Schema(TRAINING_LOG), orient="row")
    writer.write_table("training_log", frame)
    writer.remove(CHECKPOINT_FILE)
    epochs = len(result.log)
    return {
        "method": method,
        "best_epoch": result.best_epoch,
        "epochs": epochs,
        "stopped_early": result.stopped_early,
        "best_valid": result.best_valid,
        "train_seconds_per_epoch": round(frame["train_seconds"].mean() or 0.0, 4),
        "eval_seconds_per_epoch": round(frame["eval_seconds"].mean() or 0.0, 4),
    }
