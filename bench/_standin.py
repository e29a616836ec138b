"""The stand-in vLLM server (tests/support/standin_server.py) for the benchmarks, run as a script
in its own process: the benchmarks import nothing from tests/, only start that file."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SERVER = Path(__file__).resolve().parents[1] / "tests" / "support" / "standin_server.py"
MODEL = "standin/vl-model"  # the model the benchmarks ask for, and the server serves


@contextmanager
def standin_process(latency: float) -> Iterator[str]:
    """The server in its own process (no GIL shared with the client), serving `MODEL` and
    answering after `latency` seconds; yields its base URL."""
    server = subprocess.Popen(
        [sys.executable, str(SERVER), "--model", MODEL, "--latency", str(latency)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        # printed once the socket listens: a request from here on waits in its backlog
        base_url = server.stdout.readline().strip().rsplit(" ", 1)[-1]
        yield base_url
    finally:
        server.terminate()
        server.wait()
