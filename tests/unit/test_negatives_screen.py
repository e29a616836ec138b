"""The near-copy screen: spares replace rejected candidates, encoded only when needed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import polars as pl

from neggen_core.config import load_config
from neggen_core.encoders.cached import stacked_vectors
from neggen_core.encoders.text import TextEncoder
from neggen_core.llm.models import (
    Attribute,
    CompletedNegative,
    Intervention,
    InterventionPlan,
    ItemInput,
)
from neggen_core.negatives.compute import cosine_histogram
from neggen_core.negatives.models import Outcome, Positive, Request, Unit
from neggen_core.negatives.screen import measured_rows, screen
from tests.support.helpers import item

POSITIVE = Positive(
    item(0, "Blue Pen"),
    "Pens",
    (Attribute(modality="text", name="colour", value="blue", is_key=True),),
    None,
)


def _candidate(text: str, reason: str | None = None) -> Outcome:
    change = Intervention(modality="text", name="colour", from_value="blue", to_value=text)
    return Outcome(
        InterventionPlan(interventions=[change]),
        CompletedNegative(text=text, visual_description=None),
        reason,
    )


class Listed:
    """A generator whose candidates are given, per item: it records what each round asked."""

    name, model = "listed", "m"

    def __init__(self, *units: list[Outcome]) -> None:
        self.units = units
        self.asked: list[list[tuple[int, int]]] = []

    def generate(self, requests: Sequence[Request]) -> list[list[Outcome]]:
        self.asked.append([(p.item.item_idx, len(n)) for (_, p), n in requests])
        return [list(self.units[p.item.item_idx][n.start : n.stop]) for (_, p), n in requests]


def _units(count: int) -> list[Unit]:
    return [(None, replace(POSITIVE, item=item(i, "Blue Pen"))) for i in range(count)]


class Measured:
    """A similarity that looks each candidate's cosine up by its text, and records the calls."""

    def __init__(self, cosines: dict[str, float]) -> None:
        self.cosines = cosines
        self.calls: list[list[str]] = []

    def __call__(self, pairs: Sequence[tuple[Positive, Outcome]]) -> np.ndarray:
        texts = [o.completed.text for _, o in pairs]
        self.calls.append(texts)
        return np.array([self.cosines[t] for t in texts])


def test_near_copies_are_rejected_and_replaced_by_spares_in_order() -> None:
    candidates = [
        _candidate("red"),
        _candidate("navy", None),
        _candidate("bad", "complete: no reply"),
        _candidate("green"),
        _candidate("black"),
    ]
    measured = Measured({"red": 0.8, "navy": 0.995, "green": 0.9, "black": 0.5})

    generator = Listed(candidates)
    [examined] = screen(_units(1), generator, 2, measured, 0.99)

    kept = [e for e in examined if e.outcome.reason is None]
    assert [e.outcome.completed.text for e in kept] == ["red", "green"]
    assert [(e.number, e.cosine) for e in examined] == [
        (0, 0.8),
        (1, 0.995),
        (2, None),
        (3, 0.9),
    ]  # the last spare is not needed, so neither measured nor written
    assert (examined[1].outcome.reason or "").startswith("near-copy: cosine 0.9950")
    assert examined[2].outcome.reason == "complete: no reply"
    # a round per shortfall: the two wanted, one spare for the copy, one for the bad reply
    assert generator.asked == [[(0, 2)], [(0, 1)], [(0, 1)]]
    assert measured.calls == [["red", "navy"], ["green"]]  # nothing to measure in round 2


def test_a_batch_is_measured_together_and_without_a_threshold_nothing_is_measured() -> None:
    units = [[_candidate("red"), _candidate("navy")], [_candidate("green"), _candidate("grey")]]
    measured = Measured({"red": 0.1, "navy": 0.2, "green": 0.3, "grey": 0.4})

    screened = screen(_units(2), Listed(*units), 1, measured, 0.99)
    assert measured.calls == [["red", "green"]]
    assert [[e.number for e in unit] for unit in screened] == [[0], [0]]

    unmeasured = screen(_units(2), Listed(*units), 2, None, None)
    assert all(e.cosine is None and e.outcome.reason is None for u in unmeasured for e in u)


def test_a_unit_whose_candidates_all_fail_keeps_every_rejection() -> None:
    candidates = [_candidate("navy"), _candidate("teal")]
    measured = Measured({"navy": 0.999, "teal": 0.9999})

    generator = Listed(candidates)
    [examined] = screen(_units(1), generator, 2, measured, 0.99)

    assert [e.number for e in examined] == [0, 1]
    assert generator.asked == [[(0, 2)], [(0, 2)]]  # the second round finds none left
    assert all((e.outcome.reason or "").startswith("near-copy") for e in examined)


def test_the_report_bins_measured_cosines_of_kept_and_rejected_negatives() -> None:
    negatives = pl.DataFrame(
        {
            "cosine_to_positive": [0.5, 0.96, 0.985, 0.992, 0.9995, None],
            "status": ["valid", "valid", "valid", "invalid", "invalid", "invalid"],
        },
        schema={"cosine_to_positive": pl.Float32, "status": pl.String},
    )

    found = cosine_histogram(negatives)

    assert found["measured"] == 5  # the unmeasured (an invalid reply) is not binned
    assert {k: v for k, v in found["valid"].items() if v} == {
        "<0.8": 1,
        "0.95-0.97": 1,
        "0.98-0.99": 1,
    }
    assert {k: v for k, v in found["rejected_near_copies"].items() if v} == {
        "0.99-0.995": 1,
        ">=0.999": 1,
    }
    assert found["valid_share_at_or_above_0.99"] == 0.0
    assert found["valid_median"] == 0.96


DESCRIPTION = (
    "Keep your desk organised with this sturdy desktop file sorter. It holds letter and legal "
    "size folders, binders and notebooks in five upright sections, so the papers you need every "
    "day stay within reach. The black finish suits any office, and the steel mesh construction "
    "resists dents and scratches. Rubber feet protect your desk and keep the sorter from sliding. "
    "Easy to assemble, no tools needed. Ideal for home offices, classrooms and reception desks."
)


def test_a_key_feature_changed_in_a_long_text_is_a_near_copy_unless_its_attributes_are_seen() -> (
    None
):
    sorter = ItemInput(
        item_idx=0,
        title="Mesh Desktop File Sorter, 5 Sections",
        description=DESCRIPTION,
        brand="Deskpro",
        categories=("Office Products", "Desk Accessories"),
        image_uri=None,
    )
    attributes = [("colour", "black", True), ("material", "steel mesh", True)]
    attributes += [("sections", "5", False), ("brand", "deskpro", True)]
    positive = Positive(
        sorter,
        "Desk Accessories",
        tuple(Attribute(modality="text", name=n, value=v, is_key=k) for n, v, k in attributes),
        None,
    )
    silver = sorter.model_copy(update={"description": DESCRIPTION.replace("black", "silver")})
    change = Intervention(modality="text", name="colour", from_value="black", to_value="silver")
    candidate = Outcome(
        InterventionPlan(interventions=[change]),
        CompletedNegative(text=silver.text(), visual_description=None),
        None,
    )
    settings = load_config(None).embeddings
    encoder = TextEncoder(settings.encoder, settings.encode_batch_size, settings.encoder_backend)

    def cosine(with_attributes: bool) -> float:
        rows = measured_rows([(positive, candidate)], with_attributes)
        vectors, _ = stacked_vectors(encoder, rows, {})
        return float(vectors[0] @ vectors[1])

    # one word of a long text: 0.996 measured; beside the attribute text, where "colour: black"
    # became "colour: silver", 0.970 measured
    assert cosine(with_attributes=False) >= 0.99 > cosine(with_attributes=True)
    assert measured_rows([(positive, candidate)], True)[1][2] == (
        "brand: deskpro; colour: silver; material: steel mesh"  # sections: not a key feature
    )


def test_the_attribute_text_holds_the_key_features_so_a_changed_size_is_seen() -> None:
    """A short shop text whose key features are its pack count, size and style: "medium" to
    "large" barely moves the text's vector, nor a text listing all seven attributes, but it is
    one of three features in the key attributes' text. A control's change (an attribute that
    is not key) leaves that text as it was."""
    case = ItemInput(
        item_idx=0,
        title="Fileton Classic Pencil Case, Pink Leather, Medium, 8 Inch, 2 Pack",
        description="A classic pink leather pencil case by Fileton, medium size, 8 inch long. "
        "Pack of 2.",
        brand="Fileton",
        categories=("Office Products", "Bags & Cases", "Pencil Cases"),
        image_uri=None,
    )
    attributes = [("brand", "fileton", False), ("colour", "pink", False)]
    attributes += [("length", "8 inch", False), ("material", "leather", False)]
    attributes += [("quantity", "2", True), ("size", "medium", True), ("style", "classic", True)]
    positive = Positive(
        case,
        "Pencil Cases",
        tuple(Attribute(modality="text", name=n, value=v, is_key=k) for n, v, k in attributes),
        None,
    )

    def candidate(name: str, before: str, after: str) -> Outcome:
        change = Intervention(modality="text", name=name, from_value=before, to_value=after)
        negative = case.model_copy(
            update={
                "title": (case.title or "").replace(before.title(), after.title()),
                "description": (case.description or "").replace(before, after),
            }
        )
        return Outcome(
            InterventionPlan(interventions=[change]),
            CompletedNegative(text=negative.text(), visual_description=None),
            None,
        )

    larger = candidate("size", "medium", "large")
    settings = load_config(None).embeddings
    encoder = TextEncoder(settings.encoder, settings.encode_batch_size, settings.encoder_backend)

    def cosine(of: Positive, with_attributes: bool = True) -> float:
        vectors, _ = stacked_vectors(encoder, measured_rows([(of, larger)], with_attributes), {})
        return float(vectors[0] @ vectors[1])

    every = tuple(a.model_copy(update={"is_key": True}) for a in positive.attributes)
    # measured: 0.9966 on the text alone; 0.9958 beside a text of all seven attributes; 0.9788
    # beside the key attributes' text
    assert cosine(positive, with_attributes=False) >= 0.99
    assert cosine(replace(positive, attributes=every)) >= 0.99 > cosine(positive)
    assert (
        measured_rows([(positive, larger)], True)[1][2]
        == "quantity: 2; size: large; style: classic"
    )
    control = candidate("colour", "pink", "blue")
    rows = measured_rows([(positive, control)], True)
    assert rows[0][2] == rows[1][2] == "quantity: 2; size: medium; style: classic"
