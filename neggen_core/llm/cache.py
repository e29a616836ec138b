"""The response cache: every model reply, stored under a key of what determines it, so that a
rerun, or another stage version with the same inputs, never sends the same request twice."""

from __future__ import annotations

import hashlib
import json
import logging
import posixpath
from typing import Any

import fsspec

from neggen_core.artifacts.publish import write_file
from neggen_core.artifacts.store import ArtifactStore

CACHE_DIR = "_cache/llm"

log = logging.getLogger(__name__)


def request_key(model: str, prompt_version: str, payload: Any, sampling: dict[str, Any]) -> str:
    """The cache key of one request: model, prompt version, hash of the exact input (messages,
    images included), sampling parameters."""
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    canonical = json.dumps(
        {"model": model, "prompt_version": prompt_version, "input": digest, "sampling": sampling},
        sort_keys=True,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


class ResponseCache:
    """One JSON file per reply, written atomically, on any fsspec filesystem."""

    def __init__(self, fs: fsspec.AbstractFileSystem, root: str) -> None:
        self.fs = fs
        self.root = root

    @classmethod
    def under(cls, store: ArtifactStore) -> ResponseCache:
        """The cache shared by every dataset under an artifact root."""
        return cls(store.fs, posixpath.join(store.root_path, CACHE_DIR))

    def _path(self, key: str) -> str:
        return posixpath.join(self.root, key[:2], f"{key}.json")

    def get(self, key: str) -> dict[str, Any] | None:
        """The cached reply, or None: never cached, or an entry that cannot be read (it is
        discarded with a warning that names it, and the request is asked again)."""
        path = self._path(key)
        try:
            with self.fs.open(path, "r") as handle:
                entry = json.load(handle)
        except FileNotFoundError:
            return None
        except ValueError as exc:  # not JSON, or not UTF-8
            entry, problem = None, str(exc)
        else:
            problem = "no reply content in it"
        if isinstance(entry, dict) and isinstance(entry.get("content"), str):
            return entry
        log.warning("discarded a corrupt LLM cache entry %s (%s); asking again", path, problem)
        self.fs.rm(path)
        return None

    def put(self, key: str, reply: dict[str, Any]) -> None:
        path = self._path(key)
        self.fs.makedirs(posixpath.dirname(path), exist_ok=True)
        write_file(self.fs, path, json.dumps(reply).encode())
