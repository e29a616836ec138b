"""The vLLM path as a real server answers it: images within the model's token budget, a prompt
past the model length, negatives that differ, replies cut off at their token limit and a wrong
API key, against a stand-in as strict as vLLM on each."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import urllib.error
import urllib.request
from pathlib import Path

import fsspec
import pytest
from PIL import Image, ImageDraw

from neggen_core.attributes.compute import result_frames
from neggen_core.attributes.contract import version_config as attributes_version
from neggen_core.config import VllmConfig, load_config
from neggen_core.errors import BackendError
from neggen_core.images import ImagePolicy, fitted_size, within_pixels
from neggen_core.llm.cache import ResponseCache, request_key
from neggen_core.llm.models import Attribute, ItemInput
from neggen_core.llm.vllm import Sampling, VllmBackend, extraction_messages, response_format
from neggen_core.negatives.contract import version_config as negatives_version
from neggen_core.negatives.models import Positive
from neggen_core.negatives.screen import changes, screen
from neggen_core.negatives.vllm import VllmNegatives
from tests.support.standin_server import (
    MODEL,
    Settings,
    StandIn,
    extraction_answer,
    prompt_tokens,
    text_tokens,
    validate,
)

BUDGET = VllmConfig().max_pixels
NO_IMAGES = ImagePolicy(root=None)


def _item(item_idx: int, title: str = "Blue Mug", **more: str | None) -> ItemInput:
    fields: dict[str, str | None] = {"description": None, "image_uri": None} | more
    return ItemInput(item_idx=item_idx, title=title, brand=None, categories=("Home",), **fields)


def _backend(
    server: StandIn, cache_dir: Path, images: ImagePolicy = NO_IMAGES, **settings: object
) -> VllmBackend:
    config = VllmConfig(base_url=server.base_url, model=MODEL, **settings)  # type: ignore[arg-type]
    cache = ResponseCache(fsspec.filesystem("file"), str(cache_dir / "cache"))
    return VllmBackend(config, cache, images)


def _tokens_of(item: ItemInput) -> tuple[int, int]:
    """(prompt tokens, answer tokens) of template 1 for a text-only item, as the stand-in
    counts them."""
    body = {"messages": extraction_messages(item), "response_format": response_format()}
    answer = json.dumps(extraction_answer(body))
    return prompt_tokens(body, [], Settings()), text_tokens(answer)


# --- 1. images within the token budget ---------------------------------------------------------


def _photo(path: Path, size: tuple[int, int], fmt: str) -> None:
    """A product photo: a red object on a light background (a real, decodable image)."""
    image = Image.new("RGB", size, (235, 235, 230))
    ImageDraw.Draw(image).ellipse(
        (size[0] // 4, size[1] // 4, 3 * size[0] // 4, 3 * size[1] // 4), fill=(200, 30, 40)
    )
    image.save(path, format=fmt)


def test_an_8_megapixel_image_is_sent_downscaled_within_the_budget_and_answered(
    tmp_path: Path,
) -> None:
    _photo(tmp_path / "big.jpg", (3264, 2448), "JPEG")  # 8.0 MP, as imageURLHighRes often is
    with StandIn() as server:  # 8192 tokens; without a budget the image alone costs 10,200
        backend = _backend(server, tmp_path, ImagePolicy(root=str(tmp_path)))
        backend.check_health()
        [result] = backend.extract([_item(0, image_uri="big.jpg")])
        stats = server.tally.snapshot()
        [(width, height)] = server.tally.image_sizes
    assert result.status == "ok", result.reason
    assert result.extraction is not None and result.extraction.visual_description is not None
    assert stats["rejected"] == 0 and stats["too_long"] == 0
    assert 0.99 * BUDGET < width * height <= BUDGET
    assert abs(width / height - 3264 / 2448) < 0.01
    assert backend.stats()["images_downscaled"] == 1


def test_an_image_within_the_budget_is_sent_as_it_was_read(tmp_path: Path) -> None:
    _photo(tmp_path / "small.png", (64, 48), "PNG")
    with StandIn() as server:
        backend = _backend(server, tmp_path, ImagePolicy(root=str(tmp_path)))
        [result] = backend.extract([_item(0, image_uri="small.png")])
        received = server.tally.images
    assert result.status == "ok"
    assert received == {hashlib.sha256((tmp_path / "small.png").read_bytes()).hexdigest()}
    assert backend.stats()["images_downscaled"] == 0


@pytest.mark.parametrize(
    ("fmt", "mode", "mime"),
    [("JPEG", "RGB", "image/jpeg"), ("PNG", "RGBA", "image/png"), ("GIF", "P", "image/png")],
)
def test_downscaling_keeps_aspect_and_format_and_is_repeatable(
    fmt: str, mode: str, mime: str
) -> None:
    buffer = io.BytesIO()
    Image.new(mode, (1200, 500)).save(buffer, format=fmt)
    data = buffer.getvalue()
    assert within_pixels(data, mime, 600_000)[0] is data  # within: the bytes as they are
    small, sent_mime = within_pixels(data, mime, 100_000)
    assert sent_mime == mime and within_pixels(data, mime, 100_000)[0] == small
    with Image.open(io.BytesIO(small)) as image:
        assert image.size == fitted_size(1200, 500, 100_000) == (489, 204)
        assert image.mode in ({"RGB"} if fmt == "JPEG" else {"RGBA", "RGB"})
    assert fitted_size(10_000, 1, 100) == (100, 1) and fitted_size(1, 10_000, 100) == (1, 100)


# --- 1. a prompt past the model length -----------------------------------------------------------


def test_a_prompt_over_the_model_length_is_an_invalid_row_naming_the_reason(
    tmp_path: Path,
) -> None:
    short, long = _item(0), _item(1, description="A sturdy blue mug. " * 200)
    length = _tokens_of(short)[0] + 200  # room for the short item's prompt and answer only
    assert _tokens_of(long)[0] > length
    with StandIn(Settings(max_model_len=length)) as server:
        backend = _backend(server, tmp_path)
        backend.check_health()
        results = backend.extract([short, long])
        stats = server.tally.snapshot()
    assert [r.status for r in results] == ["ok", "invalid"]
    assert stats["requests"] == 2 and stats["too_long"] == 1  # neither retried nor repaired
    _, descriptions = result_frames(results, [short, long], backend.source, "v")
    [row] = descriptions.filter(descriptions["status"] == "invalid").iter_rows(named=True)
    assert row["item_idx"] == 1
    assert row["reason"].startswith(
        f"prompt too long: The decoder prompt (length {_tokens_of(long)[0]}) is longer than "
        f"the maximum model length of {length}."
    )
    assert "llm.vllm.max_pixels" in row["reason"] and "--max-model-len" in row["reason"]
    assert backend.stats()["prompt_too_long"] == 1 and backend.stats()["repairs"] == 0


# --- 2. negatives that differ ------------------------------------------------------------------


def _positive(item_idx: int, colour: str) -> Positive:
    title = f"{colour.title()} Mug"
    return Positive(
        item=_item(item_idx, title),
        category="Home",
        attributes=(
            Attribute(modality="text", name="colour", value=colour, is_key=True),
            Attribute(modality="text", name="first word", value=colour, is_key=False),
        ),
        visual_description=None,
    )


def _negatives(backend: VllmBackend, per_item: int = 4, spare: int = 4) -> list[list[object]]:
    generator = VllmNegatives(backend, per_item + spare, 1, 0.5, seed="0:1")
    units = [(None, _positive(i, c)) for i, c in enumerate(("red", "green", "blue"))]
    return screen(units, generator, per_item, None, None)  # type: ignore[return-value]


def test_a_positives_negatives_differ_and_no_request_is_paid_twice(tmp_path: Path) -> None:
    with StandIn() as server:  # greedy unless asked to sample, as Qwen2.5-VL's generation_config
        backend = _backend(server, tmp_path)
        examined = _negatives(backend)
        stats = server.tally.snapshot()
        sampling = list(server.tally.sampling)
    for unit in examined:
        kept = [e.outcome for e in unit if e.outcome.reason is None]  # type: ignore[attr-defined]
        assert len(kept) == 4
        assert len({changes(outcome) for outcome in kept}) == 4  # four different negatives
    assert stats["answered_twice"] == 0 and stats["requests"] == stats["answered"]
    assert backend.stats()["shared_in_flight"] == backend.stats()["cache_hits"] == 0
    plans = [s for s in sampling if s.get("top_k") == -1]
    assert len(plans) == stats["requests"]  # every request sampled, each with a seed of its own
    assert {s["temperature"] for s in plans} == {0.7} and {s["top_p"] for s in plans} == {1.0}
    assert len({s["seed"] for s in plans}) == stats["requests"] // 2  # a plan's and completion's
    with StandIn() as server:  # the same negatives again: all from the cache
        assert _negatives(_backend(server, tmp_path)) == examined
        assert server.tally.snapshot()["requests"] == 0


def test_negatives_decoded_greedily_repeat_are_dropped_as_duplicates_and_paid_once(
    tmp_path: Path,
) -> None:
    with StandIn() as server:
        backend = _backend(server, tmp_path, negatives_temperature=0.0)
        examined = _negatives(backend)
        stats = server.tally.snapshot()
        sampling = list(server.tally.sampling)
    for unit in examined:
        reasons = [e.outcome.reason for e in unit]  # type: ignore[attr-defined]
        assert reasons[0] is None  # one negative kept, its seven repeats dropped and counted
        assert reasons[1:] == ["duplicate: the same changes as candidate 0"] * 7
    assert stats["requests"] == 3 * 2 and stats["answered_twice"] == 0  # a plan, a completion
    assert all("seed" not in s for s in sampling)  # a greedy request sends no seed


def test_the_cache_key_has_what_changes_the_answer() -> None:
    messages = [{"role": "user", "content": "x"}]

    def key(sampling: Sampling) -> str:
        return request_key(MODEL, "v", messages, sampling.body())

    assert Sampling(0.0, 64, 1).body() == {"temperature": 0.0, "max_completion_tokens": 64}
    assert key(Sampling(0.0, 64, 1)) == key(Sampling(0.0, 64, 2))  # greedy ignores the seed
    assert key(Sampling(0.7, 64, 1)) != key(Sampling(0.7, 64, 2))
    assert key(Sampling(0.7, 64, 1)) != key(Sampling(0.5, 64, 1))
    assert key(Sampling(0.7, 64, 1)) != key(Sampling(0.7, 128, 1))
    assert Sampling(0.7, 64, 1).body() == {
        "temperature": 0.7,
        "top_p": 1.0,
        "top_k": -1,
        "seed": 1,
        "max_completion_tokens": 64,
    }


def test_the_negatives_temperature_versions_the_negatives_not_the_attributes() -> None:
    base = load_config(None, ["llm.backend=vllm"])
    hotter = load_config(None, ["llm.backend=vllm", "llm.vllm.negatives_temperature=0.3"])
    assert attributes_version(base) == attributes_version(hotter)
    assert negatives_version(base) != negatives_version(hotter)
    budget = load_config(None, ["llm.backend=vllm", "llm.vllm.max_pixels=500000"])
    assert attributes_version(base) != attributes_version(budget)
    assert attributes_version(base)["llm"]["request_version"] == 2


def test_the_old_max_tokens_setting_is_read_with_a_warning() -> None:
    with pytest.warns(FutureWarning, match="max_completion_tokens"):
        config = VllmConfig.model_validate({"max_tokens": 64})
    assert config.max_completion_tokens == 64


# --- 3. replies cut off at their token limit ----------------------------------------------------


def test_a_cut_off_reply_is_asked_once_more_with_a_larger_limit(tmp_path: Path) -> None:
    item = _item(0)
    limit = _tokens_of(item)[1] - 1  # the answer is one token longer than the limit
    with StandIn() as server:
        backend = _backend(server, tmp_path, max_completion_tokens=limit)
        [result] = backend.extract([item])
        stats = server.tally.snapshot()
        asked = [s["max_completion_tokens"] for s in server.tally.sampling]
    assert result.status == "ok", result.reason
    assert asked == [limit, 2 * limit] and "max_tokens" not in server.tally.sampling[0]
    assert stats["finish_reasons"] == {"length": 1, "stop": 1}
    counters = backend.stats()
    assert counters["length_retries"] == 1 and counters["repairs"] == 0
    assert counters["finish_reason_length"] == counters["finish_reason_stop"] == 1


def test_a_reply_cut_off_twice_is_recorded_with_its_reason_never_repaired(tmp_path: Path) -> None:
    with StandIn(Settings(p_length=1.0)) as server:  # every reply runs on past its limit
        backend = _backend(server, tmp_path)
        [result] = backend.extract([_item(0)])
        asked = [s["max_completion_tokens"] for s in server.tally.sampling]
        stats = server.tally.snapshot()
    assert result.status == "invalid"
    assert result.reason == (
        "cut off: the reply reached its limit (finish_reason length) at 1024 tokens and "
        "again at 2048"
    )
    assert asked == [1024, 2048] and stats["finish_reasons"] == {"length": 2}
    assert backend.stats()["repairs"] == 0


def test_the_larger_limit_stays_within_the_model_length(tmp_path: Path) -> None:
    item = _item(0)
    prompt, answer = _tokens_of(item)
    limit = answer - 5
    with StandIn(Settings(max_model_len=prompt + limit + 5)) as server:
        backend = _backend(server, tmp_path, max_completion_tokens=limit)
        backend.check_health()  # the server's max_model_len, from /v1/models
        [result] = backend.extract([item])
        asked = [s["max_completion_tokens"] for s in server.tally.sampling]
    assert result.status == "ok" and asked == [limit, limit + 5]

    with StandIn(Settings(max_model_len=prompt + limit)) as server:  # no room for more
        backend = _backend(server, tmp_path / "full", max_completion_tokens=limit)
        backend.check_health()
        [result] = backend.extract([item])
        assert server.tally.snapshot()["requests"] == 1
    assert result.status == "invalid" and result.reason == (
        f"cut off: the reply reached its limit of {limit} tokens (finish_reason length) and "
        f"the model length ({prompt + limit} tokens, {prompt} in the prompt) leaves no room "
        "for a larger one"
    )


# --- 4. the API key -----------------------------------------------------------------------------


def test_a_wrong_key_fails_the_health_check_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with StandIn(Settings(api_key="right-key")) as server:
        monkeypatch.setenv("VLLM_API_KEY", "wrong-key")
        wrong = _backend(server, tmp_path)
        with pytest.raises(BackendError) as refused:
            wrong.check_health()
        message = str(refused.value)
        assert message.startswith(f"{server.base_url}/models refused the API key (HTTP 401)")
        assert "the key in the environment variable VLLM_API_KEY" in message
        assert "wrong-key" not in message and "vllm serve" not in message
        with pytest.raises(BackendError, match=r"refused the API key \(HTTP 401\)"):
            wrong.extract([_item(0)])  # mid-run: the batch fails, no item is recorded invalid

        monkeypatch.delenv("VLLM_API_KEY")
        with pytest.raises(BackendError, match=r"VLLM_API_KEY \(llm.vllm.api_key_env\) is not set"):
            _backend(server, tmp_path).check_health()

        monkeypatch.setenv("VLLM_API_KEY", "right-key")
        right = _backend(server, tmp_path)
        right.check_health()
        assert right.extract([_item(0)])[0].status == "ok"
        stats = server.tally.snapshot()
    assert stats["unauthorized"] == 3 and stats["answered"] == 1


# --- 5. a stand-in as strict as the server ------------------------------------------------------


def _body(url: str) -> dict[str, object]:
    parts = [{"type": "text", "text": "x"}, {"type": "image_url", "image_url": {"url": url}}]
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": parts}],
        "response_format": response_format(),
    }


def test_the_standin_refuses_what_vllm_refuses() -> None:
    fake_png = b"\x89PNG\r\n\x1a\n" + b"not an image" * 8
    url = "data:image/png;base64," + base64.b64encode(fake_png).decode()
    assert "could not be decoded" in str(validate(_body(url), Settings()))

    broken = response_format() | {
        "json_schema": {"name": "extraction", "schema": {"type": 12, "properties": {}}}
    }
    body = _body("https://example.com/a.png") | {"response_format": broken}
    assert "the extraction schema does not compile" in str(validate(body, Settings()))
    assert validate(_body("https://example.com/a.png"), Settings()) is None

    with StandIn(Settings(api_key="k")) as server:
        request = urllib.request.Request(f"{server.base_url}/models")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        assert refused.value.code == 401
        request.add_header("Authorization", "Bearer k")
        with urllib.request.urlopen(request, timeout=5) as reply:
            [card] = json.loads(reply.read())["data"]
        assert card["max_model_len"] == Settings().max_model_len
