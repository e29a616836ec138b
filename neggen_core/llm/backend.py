"""One interface over the LLM backends, chosen by `llm.backend`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from neggen_core.artifacts.store import ArtifactStore
from neggen_core.config import NeggenConfig
from neggen_core.images import ImagePolicy
from neggen_core.llm.models import ExtractionResult, ItemInput

OFFLINE_EXTRACTOR_VERSION = 4


class Backend(Protocol):
    """Answers template 1 for batches of items."""

    name: str
    model: str
    marks_keys: bool  # True: the backend marks is_key itself; False: the stage chooses keys

    @property
    def source(self) -> str:
        """`backend/model`, recorded on every output row."""
        ...

    def extract(self, items: Sequence[ItemInput]) -> list[ExtractionResult]: ...

    def stats(self) -> dict[str, Any]:
        """Counters for the stage report: requests sent, cache hits, tokens."""
        ...


def version_config(config: NeggenConfig) -> dict[str, Any]:
    """The part of the LLM config that changes answers (never keys, timeouts, concurrency)."""
    llm = config.llm
    fetched = {"fetch_images": True} if config.dataset.fetch_images else {}
    if llm.backend == "offline":
        return {
            "backend": "offline",
            "zero_shot": llm.zero_shot,
            "extractor_version": OFFLINE_EXTRACTOR_VERSION,
            **fetched,
        }
    return {
        "backend": "vllm",
        **fetched,
        "model": llm.vllm.model,
        "temperature": llm.vllm.temperature,
        "max_tokens": llm.vllm.max_tokens,
        "seed": llm.vllm.seed,
    }


def open_backend(
    config: NeggenConfig, store: ArtifactStore, images: ImagePolicy | None = None
) -> Backend:
    """The configured backend, reading item images under `images` (none without it); the vLLM
    one checks its server first and keeps its response cache under the artifact root."""
    images = images or ImagePolicy(root=None)
    if config.llm.backend == "vllm":
        from neggen_core.llm.cache import ResponseCache
        from neggen_core.llm.vllm import VllmBackend

        backend = VllmBackend(config.llm.vllm, ResponseCache.under(store), images)
        backend.check_health()
        return backend
    from neggen_core.encoders.text import bundled_encoder
    from neggen_core.llm.offline import OfflineBackend, ZeroShot

    return OfflineBackend(ZeroShot(bundled_encoder()) if config.llm.zero_shot else None, images)
