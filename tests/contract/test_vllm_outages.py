"""An LLM server that stops answering is a failure to resume from, never a recorded answer: the
batch is not written, the stage fails naming the server, and a rerun asks only what is missing.
Invalid replies past `llm.max_invalid_share` fail the stage; identical requests in flight are
sent once; a corrupt cache entry is discarded and asked again."""

from __future__ import annotations

import logging
from pathlib import Path

import fsspec
import polars as pl
import pytest

from neggen_core.artifacts.schemas import DESCRIPTIONS
from neggen_core.artifacts.store import ArtifactRef
from neggen_core.config import NeggenConfig, VllmConfig
from neggen_core.errors import BackendError
from neggen_core.images import ImagePolicy
from neggen_core.llm.cache import ResponseCache
from neggen_core.llm.models import ItemInput
from neggen_core.llm.vllm import VllmBackend
from neggen_core.pipeline.run import run_stage
from neggen_core.pipeline.stages import open_store, plan_versions
from tests.support.standin_server import MODEL, Settings, StandIn
from tests.support.vllm import standin_config

ITEMS = 295  # the demo catalogue after its 5-core


def _config(root: str, server: StandIn, *more: str) -> NeggenConfig:
    return standin_config(root, server, "llm.vllm.max_retries=1", *more)


def _ingest(root: str) -> ArtifactRef:
    with StandIn() as server:
        return run_stage(_config(root, server), "ingest", {}).ref


def _healthy_rerun(root: str, ingest: ArtifactRef) -> tuple[NeggenConfig, ArtifactRef, int]:
    """The attributes stage against a healthy server: (config, artifact, requests it got)."""
    with StandIn() as server:
        config = _config(root, server)
        ref = run_stage(config, "attributes", {"ingest": ingest}).ref
        return config, ref, server.tally.snapshot()["requests"]


def _invalid(config: NeggenConfig, ref: ArtifactRef) -> int:
    """Items recorded invalid (their text row; an item with an image has an image row too)."""
    descriptions = open_store(config).read_frame(ref, "descriptions", DESCRIPTIONS)
    text = descriptions.filter(pl.col("modality") == "text")
    return text.filter(pl.col("status") == "invalid").height


def test_a_server_that_dies_mid_stage_fails_the_batch_and_the_rerun_asks_only_the_rest(
    root: str,
) -> None:
    ingest = _ingest(root)
    with StandIn(Settings(fail_after=100)) as dying:
        config = _config(root, dying)
        with pytest.raises(BackendError, match=rf"the vLLM server at {dying.base_url} gave no"):
            run_stage(config, "attributes", {"ingest": ingest})
        answered = sum(dying.tally.answered.values())
    assert 100 <= answered < ITEMS
    version = plan_versions(config)["attributes"]
    assert not open_store(config).exists("attributes", version)

    config, ref, requests = _healthy_rerun(root, ingest)
    assert ref.version == version
    assert _invalid(config, ref) == 0
    assert requests == ITEMS - answered  # the answers received before the outage were cached


def test_a_hanging_server_fails_the_stage_and_a_healthy_one_completes_it(root: str) -> None:
    ingest = _ingest(root)
    with StandIn(Settings(p_timeout=1.0, hang_s=0.2)) as hanging:
        config = _config(root, hanging)
        with pytest.raises(BackendError, match=rf"{hanging.base_url} gave no reply for 64 of 64"):
            run_stage(config, "attributes", {"ingest": ingest})
    config, ref, requests = _healthy_rerun(root, ingest)
    assert _invalid(config, ref) == 0 and requests == ITEMS


def test_too_many_invalid_replies_fail_the_stage_until_allowed(root: str) -> None:
    ingest = _ingest(root)
    # every reply is garbled; a timeout well above a loaded machine's answer time, so that an
    # answer slowed by CPU contention is not a transport failure (one made this test flaky)
    patient = "llm.vllm.timeout_s=10"
    with StandIn(Settings(p_malformed=1.0)) as garbled:
        config = _config(root, garbled, patient)
        with pytest.raises(BackendError, match=r"295 of 295 items \(100.0%\) got no valid reply"):
            run_stage(config, "attributes", {"ingest": ingest})
        allowed = _config(root, garbled, patient, "llm.max_invalid_share=1.0")
        ref = run_stage(allowed, "attributes", {"ingest": ingest}).ref  # the batches are kept
        assert garbled.tally.snapshot()["requests"] == 2 * ITEMS  # each asked, then repaired once
    assert _invalid(allowed, ref) == ITEMS


def _item(item_idx: int) -> ItemInput:
    return ItemInput(
        item_idx=item_idx,
        title="Blue Mug",
        description=None,
        brand=None,
        categories=("Home",),
        image_uri=None,
    )


def test_identical_requests_in_flight_are_sent_once(tmp_path: Path) -> None:
    with StandIn(Settings(latency_s=0.2)) as server:
        backend = VllmBackend(
            VllmConfig(base_url=server.base_url, model=MODEL),
            _cache(tmp_path),
            ImagePolicy(root=None),
        )
        results = backend.extract([_item(i) for i in range(4)])
        assert server.tally.snapshot()["requests"] == 1
    assert [r.status for r in results] == ["ok"] * 4
    assert backend.stats()["shared_in_flight"] == 3


def _cache(path: Path) -> ResponseCache:
    return ResponseCache(fsspec.filesystem("file"), str(path / "cache"))


def test_a_corrupt_cache_entry_is_discarded_named_and_asked_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with StandIn() as server:
        cache = _cache(tmp_path)
        config = VllmConfig(base_url=server.base_url, model=MODEL)
        assert (
            VllmBackend(config, cache, ImagePolicy(root=None)).extract([_item(0)])[0].status == "ok"
        )
        [entry] = list(Path(tmp_path, "cache").rglob("*.json"))
        entry.write_bytes(b'{"content": "trunc')
        with caplog.at_level(logging.WARNING):
            again = VllmBackend(config, cache, ImagePolicy(root=None)).extract([_item(0)])
        assert server.tally.snapshot()["requests"] == 2
    assert again[0].status == "ok"
    assert f"discarded a corrupt LLM cache entry {entry}" in caplog.text
    assert entry.read_text().startswith('{"content": "{')  # the fresh answer, cached again
