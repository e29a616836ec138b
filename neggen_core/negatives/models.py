"""What every negatives generator shares, whatever its backend: the positive a negative is made
from, one negative's outcome, the generator interface, the control view of a positive and the
draw of each negative's modality."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from neggen_core.llm.models import Attribute, CompletedNegative, InterventionPlan, ItemInput


@dataclass(frozen=True)
class Positive:
    """A positive item with what the negatives are made from."""

    item: ItemInput
    category: str
    attributes: tuple[Attribute, ...]
    visual_description: str | None


@dataclass(frozen=True)
class Outcome:
    """One negative: its plan and completion, and why it is invalid (None when valid)."""

    plan: InterventionPlan
    completed: CompletedNegative
    reason: str | None


Unit = tuple[int | None, Positive]  # (user_idx, or None per item; the positive)
# a unit and which of its candidates are asked for (candidate j is the same whenever asked)
Request = tuple[Unit, range]


class Generator(Protocol):
    """Writes the candidate negatives of units: templates 2 and 3, each candidate checked. A
    unit has up to `per_item` candidates (fewer where its attributes allow fewer), numbered;
    a request asks for some of them, and gets fewer only where there are no more."""

    name: str
    model: str

    def generate(self, requests: Sequence[Request]) -> list[list[Outcome]]: ...


def as_control(positive: Positive) -> Positive:
    """The positive as a control generator sees it: the attributes that are not key features
    marked as the ones to change, its key features as the ones to keep. The same templates then
    write negatives that change only what does not decide a user's choice."""
    swapped = tuple(a.model_copy(update={"is_key": not a.is_key}) for a in positive.attributes)
    return replace(positive, attributes=swapped)


def modality_order(
    modalities: Sequence[str], count: int, image_ratio: float, rng: random.Random
) -> list[str]:
    """The modality of each of `count` negatives: by `image_ratio` when both are available."""
    if not modalities:
        return []
    if len(modalities) == 1:
        return [modalities[0]] * count
    images = round(count * image_ratio)
    order = ["image"] * images + ["text"] * (count - images)
    rng.shuffle(order)
    return order
