"""Shared fixtures: temp artifact roots, one Prefect test harness per session, the demo built
once. The plain helpers the tests share are in tests/support/."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# the shared helpers' `assert`s explain their failures as a test module's do (this must come
# before anything imports them)
pytest.register_assert_rewrite("tests.support")


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


@pytest.fixture(scope="session")
def demo_built(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, object]]:
    """The small demo built through embeddings once per session: (artifact root, refs)."""
    from neggen_core.config import load_config
    from neggen_core.pipeline.run import run_stage
    from neggen_core.pipeline.stages import STAGE_ORDER
    from tests.support.helpers import DEMO_SETTINGS

    root = str(tmp_path_factory.mktemp("demo-artifacts"))
    config = load_config(None, [f"artifacts.root={root}", *DEMO_SETTINGS])
    refs: dict[str, object] = {}
    for stage in STAGE_ORDER[: STAGE_ORDER.index("embeddings") + 1]:
        refs[stage] = run_stage(config, stage, refs).ref  # type: ignore[arg-type]
    return root, refs
