"""Configs for running stages against the stand-in vLLM server."""

from __future__ import annotations

from neggen_core.config import NeggenConfig, load_config
from tests.support.standin_server import StandIn


def standin_config(root: str, server: StandIn, *more: str) -> NeggenConfig:
    """The default config on the vLLM backend against `server`, writing under `root`."""
    return load_config(
        None,
        [
            f"artifacts.root={root}",
            *server.overrides(),
            "llm.vllm.concurrency=16",
            "attributes.batch_size=64",
            *more,
        ],
    )
