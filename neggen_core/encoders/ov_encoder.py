"""A sentence-transformers model run by OpenVINO on the CPU: about 4x torch on this machine, the
same vectors to float rounding.

The model's transformer is converted from its torch weights (`openvino.convert_model`, no
network) once and kept in a cache folder keyed by the model, its sequence length and the
OpenVINO version; tokenising, mean pooling and normalising are the sentence-transformers
model's own steps, done here around the compiled network. Only models of the plain shape
(Transformer, mean Pooling, optionally Normalize) are converted; another shape is an
`UnsupportedModel`, and the caller keeps torch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from neggen_core.threads import budget

CACHE_ENV = "NEGGEN_CACHE_DIR"
REQUEST_TEXTS = 8  # texts per inference request


class UnsupportedModel(Exception):
    """The model cannot be run by OpenVINO here (its shape, or OpenVINO missing)."""


def cache_root() -> Path:
    """Where converted models are kept: $NEGGEN_CACHE_DIR, else ~/.cache/neggen."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "neggen")


def _shape(model: Any) -> tuple[Any, bool]:
    """The model's Transformer module and whether it normalises; `UnsupportedModel` otherwise."""
    names = [type(module).__name__ for module in model]
    if names not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        raise UnsupportedModel(f"modules {names}, not Transformer, Pooling[, Normalize]")
    pooling = model[1].get_config_dict()
    if pooling.get("pooling_mode") != "mean":
        raise UnsupportedModel(f"pooling {pooling.get('pooling_mode')!r}, not mean")
    return model[0], len(names) == 3


class OpenVinoSentenceModel:
    """`encode` as sentence-transformers', run by a compiled OpenVINO network."""

    def __init__(self, model: Any, fingerprint: str) -> None:
        try:
            import openvino
        except ImportError as exc:
            raise UnsupportedModel(f"openvino is not installed ({exc})") from exc
        self._transformer, self._normalises = _shape(model)
        self.tokenizer = self._transformer.tokenizer
        self.max_seq_length = int(model.max_seq_length)
        self.dim = int(model.get_embedding_dimension())
        key = {
            "model": fingerprint,
            "max_seq_length": self.max_seq_length,
            "openvino": openvino.__version__,
        }
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        self.folder = cache_root() / "openvino" / digest
        if not (self.folder / "model.xml").exists():
            self._convert(openvino, key)
        # parallel streams, each fed small requests, measured fastest here (202 texts/s against
        # 175 for one stream of batches of 32); the vectors are the same bits either way
        settings: dict[str, Any] = {"PERFORMANCE_HINT": "THROUGHPUT"}
        if threads := budget():
            settings["INFERENCE_NUM_THREADS"] = threads
        compiled = openvino.Core().compile_model(str(self.folder / "model.xml"), "CPU", settings)
        self._network = compiled
        # twice the streams' requests in flight: a stream finds the next one ready
        self._jobs = 2 * int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self._inputs = {port.get_any_name() for port in compiled.inputs}
        self._openvino = openvino

    def _convert(self, openvino: Any, key: dict[str, Any]) -> None:
        """Convert the transformer and keep it: written aside, then renamed into place."""
        example = dict(self.tokenizer(["a", "an example"], padding=True, return_tensors="pt"))
        # tracing the model makes transformers and torch warn about tracing itself (and about
        # their own deprecations): noise on a user's first run, about a step that is checked
        # by comparing the vectors with torch's
        transformers_log = logging.getLogger("transformers")
        level = transformers_log.level
        transformers_log.setLevel(logging.ERROR)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                network = openvino.convert_model(
                    self._transformer.auto_model, example_input=example
                )
        finally:
            transformers_log.setLevel(level)
        staging = self.folder.with_name(f".{self.folder.name}-{uuid.uuid4().hex}")
        staging.mkdir(parents=True)
        openvino.save_model(network, str(staging / "model.xml"))
        (staging / "key.json").write_text(json.dumps(key, indent=2))
        try:
            staging.rename(self.folder)
        except OSError:  # another process converted it first
            shutil.rmtree(staging, ignore_errors=True)

    def get_embedding_dimension(self) -> int:
        return self.dim

    def encode(
        self,
        sentences: list[str],
        batch_size: int = 32,
        normalize_embeddings: bool = True,
        **_: Any,
    ) -> np.ndarray:
        """Longest first, as sentence-transformers does, in requests of `REQUEST_TEXTS` (at most
        `batch_size`) texts run on the network's parallel streams; mean pooled over the real
        tokens, L2-normalised when asked (or when the model normalises). Safe to call from
        several threads (each call has its own requests)."""
        order = np.argsort([-len(text) for text in sentences], kind="stable")
        out = np.zeros((len(sentences), self.dim), dtype=np.float32)
        queue = self._openvino.AsyncInferQueue(self._network, self._jobs)

        def pooled(request: Any, rows_and_mask: tuple[np.ndarray, np.ndarray]) -> None:
            rows, mask = rows_and_mask
            hidden = request.get_output_tensor(0).data
            out[rows] = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)

        queue.set_callback(pooled)
        step = min(batch_size, REQUEST_TEXTS)
        for start in range(0, len(sentences), step):
            rows = order[start : start + step]
            tokens = self.tokenizer(
                [sentences[row] for row in rows],
                padding=True,
                truncation=True,
                max_length=self.max_seq_length,
                return_tensors="np",
            )
            feed = {name: value for name, value in tokens.items() if name in self._inputs}
            queue.start_async(feed, (rows, tokens["attention_mask"][..., None].astype(np.float32)))
        queue.wait_all()
        if normalize_embeddings or self._normalises:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out
