"""The train stage: a model trained on the train split, selected on valid Recall@20.

Writes `model.pt` (the best epoch's `state_dict`, for `torch.load(..., weights_only=True)`) and
the `training_log` table. While it runs, `checkpoint.pt` in the staging folder holds the last
finished epoch; a rerun after a kill resumes from it, and it is removed before the commit.
"""

from __future__ import annotations

import io
import logging
from typing import Any

import polars as pl
import torch

from neggen_core import progress
from neggen_core.artifacts.schemas import TRAINING_LOG
from neggen_core.artifacts.store import ArtifactWriter
from neggen_core.evaluation.evaluator import Evaluator
from neggen_core.models.registry import MethodId, build_model, build_sampler
from neggen_core.pipeline.spec import Build, StageSpec
from neggen_core.train.compute import fit
from neggen_core.train.contract import (
    CHECKPOINT_FILE,
    MODEL_FILE,
    SCHEMA_VERSION,
    TABLES,
    UPSTREAM,
    reads,
    training_data,
    version_config,
)

log = logging.getLogger(__name__)


class WriterCheckpoints:
    """The trainer's checkpoint, kept in the artifact's staging folder."""

    def __init__(self, writer: ArtifactWriter) -> None:
        self.writer = writer

    def load(self) -> bytes | None:
        return self.writer.read_bytes(CHECKPOINT_FILE)

    def save(self, data: bytes) -> None:
        self.writer.write_bytes(CHECKPOINT_FILE, data)


def _mean(seconds: pl.Series) -> float:
    """The mean, to 4 places; 0.0 with no epoch."""
    mean = seconds.mean()
    return round(mean, 4) if isinstance(mean, float) else 0.0


def build(ctx: Build) -> dict[str, Any]:
    config, store, upstream, writer = ctx.config, ctx.store, ctx.upstream, ctx.writer
    data = training_data(config, store, upstream, for_training=True)
    model = build_model(config.train, data)
    sampler = build_sampler(config.train, data)
    evaluator = Evaluator(data, config.evaluate)
    method = MethodId.of(config.train).label

    best = [float("-inf")]

    def epoch_done(row: dict[str, Any]) -> None:
        best[0] = max(best[0], row["valid_recall_20"])
        share = row["generated_fallback_share"]
        summary = (
            f"loss {row['loss']:.4f}, valid recall@20 {row['valid_recall_20']:.4f} "
            f"(best {best[0]:.4f}), {row['train_seconds'] + row['eval_seconds']:.1f} s"
        )
        log.info(
            "%s epoch %d/%d: %s%s",
            method,
            row["epoch"] + 1,
            config.train.epochs,
            summary,
            "" if share is None else f", generated negatives drawn uniformly {share:.1%}",
        )
        progress.report("train", row["epoch"] + 1, config.train.epochs, summary)

    result = fit(
        model, sampler, data, evaluator, config.train, WriterCheckpoints(writer), epoch_done
    )
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
        "train_seconds_per_epoch": _mean(frame["train_seconds"]),
        "eval_seconds_per_epoch": _mean(frame["eval_seconds"]),
    }


SPEC = StageSpec(
    "train",
    UPSTREAM,
    SCHEMA_VERSION,
    TABLES,
    version_config,
    build=build,
    resumable=True,
    reads=reads,
)
