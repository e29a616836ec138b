"""The two deployments of the `neggen` flow, served from one process by `neggen serve`.

`prefect.yaml` declares the same two for a work pool; a test keeps them in step."""

from __future__ import annotations

import os

from prefect import serve
from prefect.deployments.runner import RunnerDeployment
from prefect.schedules import Cron

from flows.neggen import neggen
from neggen_core.config import NeggenConfig

FULL = "full"
REGENERATE = "regenerate-negatives"


def deployments(
    config: NeggenConfig, config_path: str | None, overrides: list[str]
) -> list[RunnerDeployment]:
    """`full` (the whole flow) and `regenerate-negatives` (on the config's cron)."""
    parameters = {
        "config_path": os.path.abspath(config_path) if config_path else None,
        "overrides": list(overrides),
    }
    schedule = config.orchestration.schedule
    return [
        neggen.to_deployment(
            name=FULL,
            parameters=parameters,
            description="The whole pipeline; a stage whose artifact version exists is skipped.",
        ),
        neggen.to_deployment(
            name=REGENERATE,
            parameters={**parameters, "regenerate_negatives": True},
            schedule=Cron(schedule.regenerate_cron, timezone=schedule.timezone),
            description="A new negatives round, then embeddings, train and evaluate; ingest "
            "and attributes reused.",
        ),
    ]


def serve_deployments(config: NeggenConfig, config_path: str | None, overrides: list[str]) -> None:
    """Serve both deployments until interrupted (runs execute in subprocesses of this one)."""
    serve(*deployments(config, config_path, overrides))
