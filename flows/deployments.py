"""The two deployments of the `neggen` flow: served from one process by `neggen serve`, or
declared in `prefect.yaml` for a work pool, whose build step `deploy_values` reads the schedule
from the same config, so that the cron has one source (`orchestration.schedule`)."""

from __future__ import annotations

import contextlib
import os
import signal
from types import FrameType
from typing import Any

import httpx
from prefect import serve
from prefect.deployments.runner import RunnerDeployment
from prefect.schedules import Cron
from prefect.settings import PREFECT_API_KEY, PREFECT_API_URL, PREFECT_UI_URL

from flows.neggen import neggen
from neggen_core.config import NeggenConfig, load_config
from neggen_core.errors import ConfigError

FULL = "full"
REGENERATE = "regenerate-negatives"
# read by `prefect deploy` (deploy_values) and by the worker's pull step (prefect.yaml)
CONFIG_VARIABLE = "NEGGEN_CONFIG"
ARTIFACTS_VARIABLE = "NEGGEN_ARTIFACTS_ROOT"
HOME_VARIABLE = "NEGGEN_HOME"
START_SERVER = (
    "start one with `prefect server start` (in another terminal, or as a service) and "
    "`export PREFECT_API_URL=http://127.0.0.1:4200/api`"
)


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


def deploy_values(config: str) -> dict[str, Any]:
    """`prefect.yaml`'s build step, run by `prefect deploy` in its own folder.

    Returns `config_path` (`$NEGGEN_CONFIG`, else `config`), that config's `cron` and
    `timezone`, the default `overrides` (`artifacts.root=$NEGGEN_ARTIFACTS_ROOT` where set,
    else none: the config's root) and `home` (this folder: where a worker without
    `$NEGGEN_HOME` runs the flow)."""
    config_path = os.environ.get(CONFIG_VARIABLE) or config
    schedule = load_config(config_path).orchestration.schedule
    root = os.environ.get(ARTIFACTS_VARIABLE)
    return {
        "config_path": config_path,
        "cron": schedule.regenerate_cron,
        "timezone": schedule.timezone,
        "overrides": [f"artifacts.root={root}"] if root else [],
        "home": os.getcwd(),
    }


def require_api() -> str:
    """The Prefect API's URL, once it answers `/health`; a `ConfigError` saying how to start
    one otherwise (without it Prefect would serve against a temporary server that ends with
    this process)."""
    url = PREFECT_API_URL.value()
    if not url:
        raise ConfigError(
            f"PREFECT_API_URL is not set: `neggen serve` needs a Prefect server; {START_SERVER}"
        )
    key = PREFECT_API_KEY.value()
    headers = {"Authorization": f"Bearer {key.get_secret_value()}"} if key else {}
    try:
        reply = httpx.get(f"{url.rstrip('/')}/health", headers=headers, timeout=5)
        reply.raise_for_status()
    except httpx.HTTPError as exc:
        raise ConfigError(
            f"PREFECT_API_URL={url} does not answer ({type(exc).__name__}: {exc}); "
            f"{START_SERVER}, or fix the URL"
        ) from exc
    return str(url)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def serve_deployments(config: NeggenConfig, config_path: str | None, overrides: list[str]) -> None:
    """Serve both deployments against a running Prefect API until SIGINT or SIGTERM (runs
    execute in subprocesses of this one; on the way out their schedules are paused)."""
    url = require_api()
    # until Prefect's runner installs its own SIGTERM handler, a SIGTERM ends it as Ctrl-C does
    signal.signal(signal.SIGTERM, _interrupt)
    served = deployments(config, config_path, overrides)
    schedule = config.orchestration.schedule
    ui = PREFECT_UI_URL.value()
    lines = [
        f"Serving against {url} (stop with Ctrl-C or SIGTERM):",
        f"  neggen/{FULL}",
        f"  neggen/{REGENERATE}  (cron {schedule.regenerate_cron!r}, {schedule.timezone})",
        "Trigger a run:",
        f"  prefect deployment run neggen/{FULL} --watch",
        f"  prefect deployment run neggen/{FULL} --param config_path=configs/office.yaml",
        "  (--param 'overrides=[\"k=v\", ...]' replaces the served overrides)",
    ]
    if ui:
        lines.append(f"or from the UI: {ui}/deployments")
    print("\n".join(lines), flush=True)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C before the runner took over
        serve(*served, print_starting_message=False)
    print("neggen serve: stopped", flush=True)
