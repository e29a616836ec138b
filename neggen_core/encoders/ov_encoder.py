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
import os
import shutil
import threading
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from neggen_core.threads import budget

CACHE_ENV = "NEGGEN_CACHE_DIR"


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
        threads = budget()
        settings = {"INFERENCE_NUM_THREADS": threads} if threads else {}
        compiled = openvino.Core().compile_model(str(self.folder / "model.xml"), "CPU", settings)
        self._network = compiled
        self._inputs = {port.get_any_name() for port in compiled.inputs}
        self._requests = threading.local()  # one model serves every thread, a request each

    def _convert(self, openvino: Any, key: dict[str, Any]) -> None:
        """Convert the transformer and keep it: written aside, then renamed into place."""
        example = dict(self.tokenizer(["a", "an example"], padding=True, return_tensors="pt"))
        network = openvino.convert_model(self._transformer.auto_model, example_input=example)
        staging = self.folder.with_name(f".{self.folder.name}-{uuid.uuid4().hex}")
        staging.mkdir(parents=True)
        openvino.save_model(network, str(staging / "model.xml"))
        (staging / "key.json").write_text(json.dumps(key, indent=2))
        try:
            staging.rename(self.folder)
        except OSError:  # another process converted it first
            shutil.rmtree(staging, ignore_errors=True)

    def _request(self) -> Any:
        """This thread's inference request (a request runs one inference at a time)."""
        if not hasattr(self._requests, "request"):
            self._requests.request = self._network.create_infer_request()
        return self._requests.request

    def get_embedding_dimension(self) -> int:
        return self.dim

    def encode(
        self,
        sentences: list[str],
        batch_size: int = 32,
        normalize_embeddings: bool = True,
        **_: Any,
    ) -> np.ndarray:
        """Longest first, `batch_size` at a time, as sentence-transformers does; mean pooled
        over the real tokens, L2-normalised when asked (or when the model normalises)."""
        order = np.argsort([-len(text) for text in sentences], kind="stable")
        out = np.zeros((len(sentences), self.dim), dtype=np.float32)
        for start in range(0, len(sentences), batch_size):
            rows = order[start : start + batch_size]
            tokens = self.tokenizer(
                [sentences[row] for row in rows],
                padding=True,
                truncation=True,
                max_length=self.max_seq_length,
                return_tensors="np",
            )
            feed = {name: value for name, value in tokens.items() if name in self._inputs}
            hidden = self._request().infer(feed)[0]
            mask = tokens["attention_mask"][..., None].astype(np.float32)
            pooled = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
            out[rows] = pooled
        if normalize_embeddings or self._normalises:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out
