"""Progress of a long stage, reported to whoever listens (the Prefect task shows it).

The stages call `report(stage, done, total, detail)` after each batch (training: each epoch);
nothing listens by default, so neggen_core runs without Prefect.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

Listener = Callable[[str, int, int, str], None]
_listener: ContextVar[Listener | None] = ContextVar("neggen_progress", default=None)


@contextmanager
def listening(callback: Listener) -> Iterator[None]:
    """Send this context's progress reports to `callback(stage, done, total, detail)`."""
    token = _listener.set(callback)
    try:
        yield
    finally:
        _listener.reset(token)


def report(stage: str, done: int, total: int, detail: str = "") -> None:
    """`done` of `total` units of `stage`; `detail` a short summary of the last one."""
    callback = _listener.get()
    if callback is not None:
        callback(stage, done, total, detail)
