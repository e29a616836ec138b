"""Plain helpers the tests share (no fixtures: those stay in tests/conftest.py): the repository's
paths, the demo's small-batch settings, a copy of its data stages, a line-file writer, a reader
of Prefect's run logs and a hand-made item."""

from __future__ import annotations

import gzip
import shutil
from datetime import datetime
from pathlib import Path

from neggen_core.llm.models import ItemInput

REPO = Path(__file__).resolve().parents[2]
DATA_STAGES = ("ingest", "attributes", "negatives", "embeddings")
OFFICE = REPO.parent / "shared" / "data" / "amazon-office"
GAMES = REPO.parent / "shared" / "data" / "amazon-games"

# small batches, so that the demo's sharded stages have several batches (10, 5 and 7) to shard
DEMO_SETTINGS = (
    "llm.zero_shot=false",
    "negatives.per_item=2",
    "attributes.batch_size=32",
    "negatives.batch_size=64",
    "embeddings.batch_size=128",
    "train.epochs=3",
)


def write_lines(path: Path, lines: list[str], gz: bool = False) -> str:
    """Write text lines to a file, gzip-compressed when `gz`."""
    data = ("\n".join(lines) + "\n").encode("utf-8")
    path.write_bytes(gzip.compress(data) if gz else data)
    return str(path)


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


def item(idx: int, title: str, image_uri: str | None = None) -> ItemInput:
    """An item with a title only (and an image when given)."""
    return ItemInput(
        item_idx=idx,
        title=title,
        description=None,
        brand=None,
        categories=(),
        image_uri=image_uri,
    )


def copy_data_stages(demo_root: str, root: Path) -> None:
    """Copy the session's demo data stages (`demo_built`'s root) under `root`, so a test trains
    and evaluates on them without building them again and without touching the session's."""
    for stage in DATA_STAGES:
        shutil.copytree(Path(demo_root, "demo-small", stage), root / "demo-small" / stage)
