"""The vLLM backend against a stand-in server that speaks vLLM's protocol."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path

import polars as pl
import pytest
from PIL import Image

from neggen_core.artifacts.schemas import ATTRIBUTES, DESCRIPTIONS, ITEMS, NEGATIVES
from neggen_core.artifacts.store import ArtifactRef
from neggen_core.config import NeggenConfig, VllmConfig
from neggen_core.errors import BackendError
from neggen_core.images import ImagePolicy
from neggen_core.llm.cache import ResponseCache
from neggen_core.llm.models import ItemInput
from neggen_core.llm.vllm import VllmBackend, extraction_messages, response_format
from neggen_core.negatives.vllm import VllmNegatives
from neggen_core.pipeline.run import run_stage
from neggen_core.pipeline.stages import open_store
from tests.support.standin_server import MODEL, Settings, StandIn, validate
from tests.support.vllm import standin_config

# An injected hang outlasts the client timeout; a real answer, even on a loaded machine, does not
# (at 0.4 s, answers delayed by CPU contention timed out, were retried and counted twice).
NO_IMAGES = ImagePolicy(root=None)
FAULTS = Settings(p_5xx=0.10, p_timeout=0.05, p_malformed=0.05, hang_s=1.5, seed=3)
SHORT_HANGS = replace(FAULTS, hang_s=0.3)


def test_no_server_is_a_clear_error(tmp_path: Path) -> None:
    config = VllmConfig(base_url="http://127.0.0.1:9/v1", model="m")
    backend = VllmBackend(config, ResponseCache.__new__(ResponseCache), NO_IMAGES)
    with pytest.raises(
        BackendError, match=r"no vLLM server answers at http://127.0.0.1:9/v1/models .*vllm serve m"
    ):
        backend.check_health()
    with StandIn() as server:
        wrong = VllmBackend(
            VllmConfig(base_url=server.base_url, model="other"),
            ResponseCache.__new__(ResponseCache),
            NO_IMAGES,
        )
        with pytest.raises(
            BackendError, match=rf"does not serve 'other' \(it serves \['{MODEL}'\]\)"
        ):
            wrong.check_health()


def test_requests_follow_the_protocol(tmp_path: Path) -> None:
    image = tmp_path / "a.png"
    Image.new("RGB", (8, 8), (200, 30, 40)).save(image)
    item = ItemInput(
        item_idx=1,
        title="Red Mug",
        description=None,
        brand=None,
        categories=("Home",),
        image_uri="a.png",
    )
    read = ImagePolicy(root=str(tmp_path)).read_checked("a.png")
    messages = extraction_messages(item, read)
    parts = messages[0]["content"]
    assert parts[1]["image_url"]["url"].startswith("data:image/png;base64,")
    body = {"model": MODEL, "messages": messages, "response_format": response_format()}
    assert validate(body, Settings()) is None
    # an image that was not read: no image part, and the prompt says there is none
    alone = extraction_messages(item)[0]["content"]
    assert len(alone) == 1 and "has no image" in alone[0]["text"]
    assert "schema" in response_format()["json_schema"]
    with StandIn() as server:
        request = urllib.request.Request(
            f"{server.base_url}/chat/completions",
            data=json.dumps({**body, "response_format": {}}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as rejected:
            urllib.request.urlopen(request, timeout=5)
        assert rejected.value.code == 400
        assert "response_format" in rejected.value.read().decode()


def test_stage_with_faults_loses_nothing_and_a_rerun_sends_nothing(root: str) -> None:
    with StandIn(FAULTS) as server:
        config = standin_config(root, server)
        ingest = run_stage(config, "ingest", {}).ref
        outcome = run_stage(config, "attributes", {"ingest": ingest})
        stats = server.tally.snapshot()
    store = open_store(config)
    items = store.read_frame(ingest, "items", ITEMS)
    descriptions = store.read_frame(outcome.ref, "descriptions", DESCRIPTIONS)
    text = descriptions.filter(pl.col("modality") == "text")
    assert sorted(text.get_column("item_idx").to_list()) == sorted(
        items.get_column("item_idx").to_list()
    )
    assert descriptions.select("item_idx", "modality").is_unique().all()
    assert set(text.get_column("status")) <= {"ok", "invalid"}
    invalid = text.filter(pl.col("status") == "invalid")
    assert invalid.get_column("reason").null_count() == 0
    assert text.filter(pl.col("status") == "ok").height > 0.9 * items.height
    assert stats["rejected"] == 0 and stats["answered_twice"] == 0
    assert (
        stats["faults"]["5xx"] > 0
        and stats["faults"]["timeout"] > 0
        and stats["faults"]["malformed"] > 0
    )
    report = store.read_json(outcome.ref, "report.json")
    # attempts that timed out before the server read them count on the client side only
    assert stats["requests"] <= report["requests_sent"] <= stats["requests"] + report["retries"]
    assert report["prompt_tokens"] > 0
    # the demo's images are small: sent as read, each a few tokens of the model length
    assert report["images_downscaled"] == 0 and stats["too_long"] == 0
    assert report["finish_reason_stop"] == stats["finish_reasons"]["stop"] > 0
    assert report["finish_reason_length"] == report["length_retries"] == 0
    attributes = store.read_frame(outcome.ref, "attributes", ATTRIBUTES)
    assert attributes.filter(pl.col("modality") == "image").height > 0
    assert attributes.get_column("source").unique().to_list() == [f"vllm/{MODEL}"]

    # a new stage version with the same inputs (another batch size) asks the server nothing
    with StandIn(FAULTS) as server:
        again = standin_config(root, server, "attributes.batch_size=100")
        rebuilt = run_stage(again, "attributes", {"ingest": ingest})
        assert rebuilt.ref.version != outcome.ref.version
        assert server.tally.snapshot()["requests"] == 0
    assert store.read_json(rebuilt.ref, "report.json")["cache_hits"] > 0


def test_killed_run_resumes_without_sending_a_request_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with StandIn(FAULTS) as server:
        clean = standin_config(str(tmp_path / "clean"), server)
        ingest = run_stage(clean, "ingest", {}).ref
        reference = run_stage(clean, "attributes", {"ingest": ingest}).ref

    original = VllmBackend.extract
    batches: list[int] = []

    def killed_at_the_third_batch(self: VllmBackend, items: list[ItemInput]) -> object:
        batches.append(len(items))
        if len(batches) == 3:
            raise KeyboardInterrupt("killed")
        return original(self, items)

    with StandIn(FAULTS) as server:
        config = standin_config(str(tmp_path / "killed"), server)
        ingest = run_stage(config, "ingest", {}).ref
        monkeypatch.setattr(VllmBackend, "extract", killed_at_the_third_batch)
        with pytest.raises(KeyboardInterrupt):
            run_stage(config, "attributes", {"ingest": ingest})
        monkeypatch.setattr(VllmBackend, "extract", original)
        resumed = run_stage(config, "attributes", {"ingest": ingest}).ref
        stats = server.tally.snapshot()
    assert stats["answered_twice"] == 0
    assert resumed.version == reference.version
    store, clean_store = open_store(config), open_store(clean)
    for table, schema in (("attributes", ATTRIBUTES), ("descriptions", DESCRIPTIONS)):
        a = store.read_frame(resumed, table, schema).drop("text", strict=False)
        b = clean_store.read_frame(reference, table, schema).drop("text", strict=False)
        assert a.equals(b), table


def test_negatives_with_faults_lose_nothing_and_resume_without_repeats(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # twice the requests of the attributes test (key and control negatives): a client timeout
    # well above a loaded machine's answer time, so that only injected faults are retried (an
    # injected hang still ends in a dropped connection, a transient error; hangs of 0.3 s, as
    # each round of requests waits for its slowest: 1.5 s doubled the time). Over ~6,000 requests
    # at 15% transient faults, 5 attempts leave one request without a reply about every other
    # run (an outage, rightly); 9 make that one run in several thousand.
    settings = [
        "negatives.batch_size=60",
        "negatives.per_item=2",
        "llm.vllm.timeout_s=3.0",
        "llm.vllm.max_retries=8",
    ]

    def build(config: NeggenConfig) -> tuple[ArtifactRef, ArtifactRef, ArtifactRef]:
        ingest = run_stage(config, "ingest", {}).ref
        attributes = run_stage(config, "attributes", {"ingest": ingest}).ref
        return (
            ingest,
            attributes,
            run_stage(config, "negatives", {"ingest": ingest, "attributes": attributes}).ref,
        )

    with StandIn(SHORT_HANGS) as server:
        clean = standin_config(str(tmp_path / "clean"), server, *settings)
        ingest, attributes, reference = build(clean)

    original = VllmNegatives.generate
    calls: list[int] = []

    def killed_in_the_third_batch(self: VllmNegatives, units: list[object]) -> object:
        calls.append(len(units))
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        return original(self, units)  # type: ignore[arg-type]

    with StandIn(SHORT_HANGS) as server:
        config = standin_config(str(tmp_path / "killed"), server, *settings)
        ingest = run_stage(config, "ingest", {}).ref
        attributes = run_stage(config, "attributes", {"ingest": ingest}).ref
        monkeypatch.setattr(VllmNegatives, "generate", killed_in_the_third_batch)
        with pytest.raises(KeyboardInterrupt):
            run_stage(config, "negatives", {"ingest": ingest, "attributes": attributes})
        monkeypatch.setattr(VllmNegatives, "generate", original)
        resumed = run_stage(config, "negatives", {"ingest": ingest, "attributes": attributes}).ref
        stats = server.tally.snapshot()
    assert stats["answered_twice"] == 0 and stats["rejected"] == 0
    assert resumed.version == reference.version
    store = open_store(config)
    negatives = store.read_frame(resumed, "negatives", NEGATIVES)
    report = store.read_json(resumed, "report.json")
    # sampled plans that repeat an earlier one of the item are dropped, and counted
    assert report["invalid_reasons"]["duplicate"] > 0
    assert report["llm"]["requests_sent"] > 0 and report["llm"]["finish_reason_stop"] > 0
    assert report["llm"]["finish_reason_length"] == 0
    assert negatives.equals(open_store(clean).read_frame(reference, "negatives", NEGATIVES))

    keyed = store.read_frame(attributes, "attributes", ATTRIBUTES).filter(pl.col("is_key"))
    items_with_keys = keyed.get_column("item_idx").n_unique()
    key_rows = negatives.filter(pl.col("kind") == "key")
    assert key_rows.get_column("item_idx").n_unique() == items_with_keys
    # a failed or near-copy candidate is replaced by a spare, asked for only then
    per_item = key_rows.filter(pl.col("status") == "valid").group_by("item_idx").len()
    assert set(per_item.get_column("len")) == {2}
    assert key_rows.height < 3 * 2 * items_with_keys
    # the controls come from the same server, each changing an attribute that is not a key
    controls = negatives.filter(pl.col("kind") == "control")
    assert controls.height > 0 and controls["negative_id"].str.contains(r"-c\d+$").all()
    keys = set(keyed.select("item_idx", "modality", "name").iter_rows())
    for row in controls.filter(pl.col("status") == "valid").iter_rows(named=True):
        for change in row["interventions"]:
            assert (row["item_idx"], change["modality"], change["name"]) not in keys
    assert negatives.get_column("negative_id").is_unique().all()
    assert set(negatives.get_column("status")) == {"valid", "invalid"}
    assert negatives.filter(pl.col("status") == "invalid").get_column("reason").null_count() == 0
    key = negatives.filter(pl.col("kind") == "key")
    assert key.filter(pl.col("status") == "valid").height > 0.8 * key.height
    assert set(negatives.get_column("backend")) == {f"vllm/{MODEL}"}
