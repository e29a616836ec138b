"""The evaluate stage: the trained model's best state, ranked once on valid and once on test.

Writes `metrics` (method, split, metric, k, value), `user_metrics` (the test metrics per user,
for paired significance tests) and `recommendations` (every test user's top items with the
scores the test metrics were computed from), and `report.json`.
"""

from __future__ import annotations

from typing import Any

from neggen_core.evaluate.compute import metrics_frame, recommendations_frame, user_metrics_frame
from neggen_core.evaluate.contract import (
    REPORT,
    SCHEMA_VERSION,
    TABLES,
    UPSTREAM,
    reads,
    version_config,
)
from neggen_core.evaluation.evaluator import Evaluator
from neggen_core.models.registry import MethodId, build_model
from neggen_core.pipeline.spec import Build, StageSpec
from neggen_core.train.contract import best_epoch, model_state, training_data


def build(ctx: Build) -> dict[str, Any]:
    config, store, upstream, writer = ctx.config, ctx.store, ctx.upstream, ctx.writer
    data = training_data(config, store, upstream)
    model = build_model(config.train, data)
    model.load_state_dict(model_state(store, upstream["train"]))
    evaluator = Evaluator(data, config.evaluate)
    method = MethodId.of(config.train).label
    valid = evaluator.rank(model, "valid")
    test = evaluator.rank(model, "test", top=config.evaluate.top_k)

    writer.write_table("metrics", metrics_frame(method, valid, test))
    writer.write_table("user_metrics", user_metrics_frame(test))
    writer.write_table("recommendations", recommendations_frame(test, config.evaluate.top_k))
    epoch = best_epoch(store, upstream["train"])
    report = {
        "method": method,
        "best_epoch": epoch,
        "valid": valid.metrics,
        "test": test.metrics,
        "test_users": len(test.users),
        "mask_valid_at_test": config.evaluate.mask_valid_at_test,
    }
    writer.write_json(REPORT, report)
    return {
        "method": method,
        "best_epoch": epoch,
        "test_recall_20": test.metrics["recall@20"],
        "test_ndcg_20": test.metrics["ndcg@20"],
        "valid_recall_20": valid.metrics["recall@20"],
    }


SPEC = StageSpec(
    "evaluate", UPSTREAM, SCHEMA_VERSION, TABLES, version_config, build=build, reads=reads
)
