"""Shared fixtures: tiny file writers, temp artifact roots, one Prefect test harness per session."""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OFFICE = REPO.parent / "shared" / "data" / "amazon-office"


def write_lines(path: Path, lines: list[str], gz: bool = False) -> str:
    """Write text lines to a file, gzip-compressed when `gz`."""
    data = ("\n".join(lines) + "\n").encode("utf-8")
    path.write_bytes(gzip.compress(data) if gz else data)
    return str(path)


@pytest.fixture
def root(tmp_path: Path) -> str:
    """An empty artifact root."""
    return str(tmp_path / "artifacts")


@pytest.fixture(scope="session", autouse=True)
def neggen_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The OpenVINO-converted encoder is kept in a session folder, not the user's cache."""
    folder = tmp_path_factory.mktemp("neggen-cache")
    os.environ["NEGGEN_CACHE_DIR"] = str(folder)
    return folder


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Prefect's test harness with its home in a temp folder and analytics off."""
    home = tmp_path_factory.mktemp("prefect-home")
    os.environ["PREFECT_HOME"] = str(home)
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


# small batches, so that the demo's sharded stages have several batches (10, 5 and 7) to shard
DEMO_SETTINGS = (
    "llm.zero_shot=false",
    "negatives.per_item=2",
    "attributes.batch_size=32",
    "negatives.batch_size=64",
    "embeddings.batch_size=128",
    "train.epochs=3",
)


@pytest.fixture(scope="session")
def demo_built(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, object]]:
    """The small demo built through embeddings once per session: (artifact root, refs)."""
    from neggen_core.config import load_config
    from neggen_core.stages import STAGE_ORDER, run_stage

    root = str(tmp_path_factory.mktemp("demo-artifacts"))
    config = load_config(None, [f"artifacts.root={root}", *DEMO_SETTINGS])
    refs: dict[str, object] = {}
    for stage in STAGE_ORDER[: STAGE_ORDER.index("embeddings") + 1]:
        refs[stage] = run_stage(config, stage, refs).ref  # type: ignore[arg-type]
    return root, refs


def run_logs(since: datetime) -> str:
    """The run logs written since `since`, as `task run name | message` lines, read back from
    Prefect's API (not a captured stream: Prefect's console handler keeps the stream it was
    configured with, which under pytest need not be the test's)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterTimestamp
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()
    lines, names = [], {}
    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(timestamp=LogFilterTimestamp(after_=since)), limit=200)
        for log in logs:
            if log.task_run_id is not None and log.task_run_id not in names:
                names[log.task_run_id] = client.read_task_run(log.task_run_id).name
            lines.append(f"{names.get(log.task_run_id, '')} | {log.message}")
    return "\n".join(lines)
