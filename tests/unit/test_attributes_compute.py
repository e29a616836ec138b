"""The attributes stage's logic on tiny hand-made frames: rows of a batch, key marks, the
invalid-reply check and the report."""

from __future__ import annotations

import polars as pl
import pytest

from neggen_core.artifacts.schemas import ATTRIBUTES, DESCRIPTIONS
from neggen_core.attributes.compute import (
    check_invalid_share,
    marked_keys,
    report,
    result_frames,
    set_is_key,
)
from neggen_core.errors import BackendError
from neggen_core.llm.models import Attribute, Extraction, ExtractionResult, ItemInput
from tests.support.helpers import item


def _item(idx: int, image_uri: str | None = None) -> ItemInput:
    return item(idx, f"Mug {idx}", image_uri)


def _attributes(rows: list[tuple[int, str, str, bool]]) -> pl.DataFrame:
    """Attribute rows of (item_idx, modality, name, is_key)."""
    return pl.DataFrame(
        [(i, m, n, "v", k, "test", "p1") for i, m, n, k in rows],
        schema=pl.Schema(ATTRIBUTES),
        orient="row",
    )


def _descriptions(rows: list[tuple[int, str, str, str | None]]) -> pl.DataFrame:
    """Description rows of (item_idx, modality, status, reason)."""
    return pl.DataFrame(
        [(i, m, None, s, r, "test", "p1") for i, m, s, r in rows],
        schema=pl.Schema(DESCRIPTIONS),
        orient="row",
    )


def test_result_frames_write_a_skipped_image_row_with_the_reason() -> None:
    red = Attribute(modality="text", name="colour", value="red", is_key=False)
    results = [
        ExtractionResult(
            item_idx=0,
            status="ok",
            extraction=Extraction(visual_description="a red mug", attributes=[red]),
            image_problem="too large (9 MB)",
        ),
        ExtractionResult(
            item_idx=1,
            status="ok",
            extraction=Extraction(visual_description="a blue mug", attributes=[]),
        ),
        ExtractionResult(item_idx=2, status="invalid", reason="no JSON"),
    ]
    items = [_item(0, "a.png"), _item(1, "b.png"), _item(2)]
    attributes, descriptions = result_frames(results, items, "lexicon/x", "p1")

    rows = descriptions.select("item_idx", "modality", "text", "status", "reason").rows()
    assert rows == [
        (0, "text", "Title: Mug 0", "ok", None),
        (0, "image", None, "skipped", "image: too large (9 MB)"),
        (1, "text", "Title: Mug 1", "ok", None),
        (1, "image", "a blue mug", "ok", None),
        (2, "text", "Title: Mug 2", "invalid", "no JSON"),
    ]
    assert attributes.select("item_idx", "name", "value", "source").rows() == [
        (0, "colour", "red", "lexicon/x")
    ]


def test_result_frames_keep_the_first_of_a_repeated_attribute() -> None:
    extraction = Extraction(
        visual_description=None,
        attributes=[
            Attribute(modality="text", name="colour", value="red", is_key=False),
            Attribute(modality="text", name="colour", value="blue", is_key=True),
            Attribute(modality="image", name="colour", value="green", is_key=False),
        ],
    )
    results = [ExtractionResult(item_idx=0, status="ok", extraction=extraction)]
    attributes, _ = result_frames(results, [_item(0)], "lexicon/x", "p1")
    assert attributes.select("modality", "value", "is_key").rows() == [
        ("text", "red", False),
        ("image", "green", False),
    ]


def test_set_is_key_marks_exactly_the_chosen_triples() -> None:
    attributes = _attributes(
        [
            (0, "text", "colour", False),  # mugs: chosen
            (0, "image", "colour", False),  # mugs, but the image modality: not chosen
            (0, "text", "brand", True),  # a mark not chosen is cleared
            (1, "text", "colour", False),  # pens: colour is not a pen key
            (1, "text", "brand", False),  # pens: chosen
        ]
    )
    categories = pl.DataFrame({"item_idx": [0, 1], "category": ["mugs", "pens"]})
    keys = pl.DataFrame(
        {"category": ["mugs", "pens"], "modality": ["text", "text"], "name": ["colour", "brand"]}
    )
    marked = set_is_key(attributes, keys, categories)
    assert marked.columns == ATTRIBUTES.names
    assert marked.get_column("is_key").to_list() == [True, False, False, False, True]
    assert marked.drop("is_key").equals(attributes.drop("is_key"))


def test_check_invalid_share_raises_above_the_limit_naming_the_count() -> None:
    descriptions = _descriptions(
        [
            (0, "text", "invalid", "no JSON"),
            (1, "text", "invalid", "no JSON"),
            (2, "text", "invalid", "timeout"),
            (3, "text", "ok", None),
            (3, "image", "invalid", "ignored: not a text row"),
        ]
    )
    check_invalid_share(descriptions, "vllm/m", 0.75)  # 3 of 4 is not above 75%
    with pytest.raises(
        BackendError, match=r"3 of 4 items \(75\.0%\) got no valid reply from vllm/m"
    ):
        check_invalid_share(descriptions, "vllm/m", 0.5)


def test_marked_keys_rank_attributes_by_how_often_the_model_marked_them() -> None:
    attributes = _attributes(
        [
            (0, "text", "colour", True),
            (1, "text", "colour", True),
            (0, "text", "material", True),
            (1, "text", "material", False),
            (1, "text", "brand", False),  # never marked: no key
        ]
    )
    categories = pl.DataFrame({"item_idx": [0, 1], "category": ["mugs", "mugs"]})
    keys = marked_keys(attributes, categories)
    assert keys.select("category", "name", "rank", "score", "lift").rows() == [
        ("mugs", "colour", 0, 1.0, 1.0),
        ("mugs", "material", 1, 0.5, 0.5),
    ]


def test_report_counts_key_coverage_and_groups_unread_images() -> None:
    items = pl.DataFrame({"item_idx": [0, 1, 2], "image_uri": ["a.png", "b.png", None]})
    attributes = _attributes([(0, "text", "colour", True), (1, "text", "colour", False)])
    descriptions = _descriptions(
        [
            (0, "text", "ok", None),
            (0, "image", "skipped", "image: unreadable (Permission denied)"),
            (1, "text", "ok", None),
            (1, "image", "skipped", "image: unreadable (Is a directory)"),
            (2, "text", "invalid", "no JSON"),
        ]
    )
    keys = pl.DataFrame(
        {
            "category": ["mugs", "mugs"],
            "modality": ["text", "text"],
            "name": ["colour", "material"],
            "rank": [0, 1],
            "source": ["own", "parent:kitchen"],
        }
    )
    summary = report(items, attributes, descriptions, keys, "lexicon", "m", {"hits": 2}, 1.234)
    assert summary["backend"] == "lexicon" and summary["model"] == "m"
    assert (summary["items"], summary["items_covered"], summary["invalid"]) == (3, 2, 1)
    assert summary["items_with_key_attribute"] == 1
    assert summary["share_with_key_attribute"] == 0.3333
    assert summary["images_not_read"] == {"unreadable ": 2}  # grouped without the detail
    assert summary["key_features"] == {"mugs": ["text:colour", "text:material"]}
    assert summary["key_sources"] == {"own": 1, "parent": 1}
    assert (summary["hits"], summary["seconds"]) == (2, 1.23)
