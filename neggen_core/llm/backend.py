"""One interface over the LLM backends, chosen by `llm.backend`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from neggen_core.artifacts.store import ArtifactStore
from neggen_core.config import NeggenConfig
from neggen_core.images import ImagePolicy
from neggen_core.llm.models import ExtractionResult, ItemInput

if TYPE_CHECKING:
    from neggen_core.llm.vllm import VllmBackend

LEXICON_EXTRACTOR_VERSION = 4
# 2: max_completion_tokens; a reply cut off (finish_reason length) asked once more with a larger
# limit; greedy requests without a seed; images downscaled to llm.vllm.max_pixels
VLLM_REQUEST_VERSION = 2


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


def uses_vllm(config: NeggenConfig) -> bool:
    """Whether the config's LLM work goes to a vLLM server rather than the lexicon backend: the
    one place that decides, for every stage."""
    return config.llm.backend == "vllm"


def version_config(config: NeggenConfig, negatives: bool = False) -> dict[str, Any]:
    """The part of the LLM config that changes a stage's answers (never keys, timeouts,
    concurrency): template 1's, and with `negatives` templates 2 and 3's too."""
    llm = config.llm
    fetched = {"fetch_images": True} if config.dataset.fetch_images else {}
    if not uses_vllm(config):
        return {
            "backend": "lexicon",
            "zero_shot": llm.zero_shot,
            "extractor_version": LEXICON_EXTRACTOR_VERSION,
            **fetched,
        }
    vllm = llm.vllm
    return {
        "backend": "vllm",
        **fetched,
        "model": vllm.model,
        "request_version": VLLM_REQUEST_VERSION,
        "temperature": vllm.temperature,
        "max_completion_tokens": vllm.max_completion_tokens,
        "max_pixels": vllm.max_pixels,
        "seed": vllm.seed,
        **({"negatives_temperature": vllm.negatives_temperature} if negatives else {}),
    }


def open_vllm(
    config: NeggenConfig, store: ArtifactStore, images: ImagePolicy | None = None
) -> VllmBackend:
    """The vLLM backend of the config, its server checked first, its response cache under the
    artifact root, reading item images under `images` (none without it)."""
    from neggen_core.llm.cache import ResponseCache
    from neggen_core.llm.vllm import VllmBackend

    backend = VllmBackend(
        config.llm.vllm, ResponseCache.under(store), images or ImagePolicy(root=None)
    )
    backend.check_health()
    return backend


def open_backend(
    config: NeggenConfig, store: ArtifactStore, images: ImagePolicy | None = None
) -> Backend:
    """The configured template 1 backend (`uses_vllm` decides which), reading item images under
    `images` (none without it)."""
    images = images or ImagePolicy(root=None)
    if uses_vllm(config):
        return open_vllm(config, store, images)
    from neggen_core.encoders.text import bundled_encoder
    from neggen_core.llm.lexicon_backend import LexiconBackend, ZeroShot

    return LexiconBackend(ZeroShot(bundled_encoder()) if config.llm.zero_shot else None, images)
