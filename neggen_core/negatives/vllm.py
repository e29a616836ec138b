"""Templates 2 (intervene) and 3 (complete) answered by a vLLM server.

For each negative of a positive: one template 2 request and one template 3 request for the plan
it returns, both sampled at `llm.vllm.negatives_temperature` with a seed of the negative's own, so
that the N negatives of an item are N different requests with N different answers (greedy
decoding would ignore the seed and answer all N alike; the screen drops such repeats as
duplicates). Both go through the vLLM backend's machinery: bounded concurrency, retries on
transient errors, a cut-off reply asked once more with a larger limit, one repair request, the
response cache. A negative is checked as the offline ones are where a model allows it: the plan
must change key features of the item in the modality asked, to other values, and the completed
text must differ from the positive and state the new values.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from typing import Any

from neggen_core.llm.models import CompletedNegative, Intervention, InterventionPlan
from neggen_core.llm.prompts import COMPLETE, INTERVENE, load_template
from neggen_core.llm.vllm import ReplyError, Session, VllmBackend, all_settled, settle
from neggen_core.negatives.models import Outcome, Positive, Request, modality_order

NO_IMAGE = "(no image)"


def _seed(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:4], "big")


def intervene_messages(positive: Positive, modality: str, count: int) -> list[dict[str, Any]]:
    attributes = "\n".join(json.dumps(a.model_dump()) for a in positive.attributes)
    text = load_template(INTERVENE).render(
        item_text=positive.item.text(),
        visual_description=positive.visual_description or NO_IMAGE,
        attributes=attributes,
        count=str(count),
        modality=modality,
    )
    return [{"role": "user", "content": [{"type": "text", "text": text}]}]


def complete_messages(positive: Positive, plan: InterventionPlan) -> list[dict[str, Any]]:
    changes = "\n".join(
        f"{c.modality} {c.name}: {c.from_value} -> {c.to_value}" for c in plan.interventions
    )
    text = load_template(COMPLETE).render(
        item_text=positive.item.text(),
        visual_description=positive.visual_description or NO_IMAGE,
        interventions=changes,
    )
    return [{"role": "user", "content": [{"type": "text", "text": text}]}]


def check_reply(
    positive: Positive, modality: str, plan: InterventionPlan, completed: CompletedNegative
) -> str | None:
    """Why a model-written negative is not valid, or None."""
    keys = {(a.modality, a.name): a.value for a in positive.attributes if a.is_key}
    for change in plan.interventions:
        if change.modality != modality or keys.get((modality, change.name)) != change.from_value:
            return (
                f"intervention on {change.modality}:{change.name}={change.from_value!r} is not a "
                f"key feature of the item in the {modality} modality"
            )
        if change.to_value.strip().lower() == change.from_value.strip().lower():
            return f"{change.modality}:{change.name} keeps its value {change.from_value!r}"
    rewritten = completed.text if modality == "text" else (completed.visual_description or "")
    original = positive.item.text() if modality == "text" else (positive.visual_description or "")
    if rewritten == original:
        return "the negative is the positive unchanged"
    for change in plan.interventions:
        if change.to_value.lower() not in rewritten.lower():
            return f"the completed {modality} does not state the new value {change.to_value!r}"
    return None


class VllmNegatives:
    """Plans and completes negatives with a model served by vLLM."""

    name = "vllm"

    def __init__(
        self, backend: VllmBackend, per_item: int, interventions: int, image_ratio: float, seed: str
    ) -> None:
        self.backend = backend
        self.model = backend.model
        self.per_item = per_item
        self.interventions = interventions
        self.image_ratio = image_ratio
        self.seed = seed
        self.intervene_version = load_template(INTERVENE).version
        self.complete_version = load_template(COMPLETE).version

    def generate(self, requests: Sequence[Request]) -> list[list[Outcome]]:
        async def all_units(session: Session) -> list[list[Outcome]]:
            base_url = self.backend.config.base_url
            units = [self._unit(session, u, p, numbers) for (u, p), numbers in requests]
            return await settle(base_url, units)

        return self.backend.run(all_units)

    async def _unit(
        self, session: Session, user_idx: int | None, positive: Positive, numbers: range
    ) -> list[Outcome]:
        """The asked candidates of one unit: candidate j's modality is drawn, for all of the
        unit's candidates at once, by the same seed whichever are asked."""
        rng = random.Random(f"{self.seed}:{user_idx}:{positive.item.item_idx}")
        modalities = sorted({a.modality for a in positive.attributes if a.is_key}, reverse=True)
        order = modality_order(modalities, self.per_item, self.image_ratio, rng)
        jobs = [
            self._one(session, user_idx, positive, j, order[j]) for j in numbers if j < len(order)
        ]
        return await all_settled(jobs)

    async def _one(
        self, session: Session, user_idx: int | None, positive: Positive, j: int, modality: str
    ) -> Outcome:
        sampling = self.backend.negatives_sampling(
            _seed(self.seed, user_idx, positive.item.item_idx, j)
        )
        count = min(
            self.interventions,
            sum(1 for a in positive.attributes if a.is_key and a.modality == modality),
        )
        empty = CompletedNegative(
            text=positive.item.text(), visual_description=positive.visual_description
        )
        try:
            plan = await self.backend.ask(
                session,
                intervene_messages(positive, modality, count),
                InterventionPlan,
                self.intervene_version,
                sampling,
            )
        except ReplyError as exc:
            return Outcome(_attempted_plan(positive, modality), empty, f"intervene: {exc}")
        try:
            completed = await self.backend.ask(
                session,
                complete_messages(positive, plan),
                CompletedNegative,
                self.complete_version,
                sampling,
            )
        except ReplyError as exc:
            return Outcome(plan, empty, f"complete: {exc}")
        return Outcome(plan, completed, check_reply(positive, modality, plan, completed))


def _attempted_plan(positive: Positive, modality: str) -> InterventionPlan:
    """The plan recorded for a negative whose plan request failed: the key feature it was
    meant to change, unchanged, so the row says what was attempted (its status is invalid)."""
    key = next(a for a in positive.attributes if a.is_key and a.modality == modality)
    return InterventionPlan(
        interventions=[
            Intervention(
                modality=key.modality, name=key.name, from_value=key.value, to_value=key.value
            )
        ]
    )
