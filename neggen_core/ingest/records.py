"""Reading record files line by line, fast, without losing a malformed record.

JSON lines are decoded by polars in large blocks; a block that fails is bisected until the bad
lines are isolated, and only those are parsed in Python (to say why they are bad). Every bad line
or bad field is written to the quarantine with its file, line number and reason.
"""

from __future__ import annotations

import ast
import gzip
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import fsspec
import polars as pl

from neggen_core.errors import InputFormatError

Kind = Literal["str", "scalar", "str_list", "str_list_list", "images"]

_DTYPES: dict[Kind, pl.DataType] = {
    "str": pl.String(),
    "scalar": pl.String(),
    "str_list": pl.List(pl.String()),
    "str_list_list": pl.List(pl.List(pl.String())),
    "images": pl.List(
        pl.Struct({"thumb": pl.String(), "large": pl.String(), "hi_res": pl.String()})
    ),
}

_EXPECTED: dict[Kind, str] = {
    "str": "a string",
    "scalar": "a number or a string",
    "str_list": "a list of strings",
    "str_list_list": "a list of lists of strings",
    "images": "a list of {thumb, large, hi_res} objects",
}

BLOCK_BYTES = 32 << 20
RECORD_PREVIEW = 500
LINE = "_line"

DROPPED = "dropped"
FIELD_NULLED = "field_nulled"


@dataclass
class Quarantine:
    """Records and fields set aside, each with where it came from and why."""

    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(
        self, source_file: str, line: int | None, record: str, reason: str, action: str
    ) -> None:
        self.rows.append(
            {
                "source_file": source_file,
                "line": line,
                "record": record[:RECORD_PREVIEW],
                "reason": reason,
                "action": action,
            }
        )

    def extend(self, frame: pl.DataFrame) -> None:
        """Add rows of a frame with the quarantine's columns."""
        self.rows.extend(frame.select(QUARANTINE_COLUMNS).to_dicts())

    def frame(self) -> pl.DataFrame:
        return pl.DataFrame(self.rows, schema=QUARANTINE_SCHEMA, orient="row")


QUARANTINE_SCHEMA = {
    "source_file": pl.String(),
    "line": pl.Int64(),
    "record": pl.String(),
    "reason": pl.String(),
    "action": pl.String(),
}
QUARANTINE_COLUMNS = list(QUARANTINE_SCHEMA)


@dataclass
class FileStats:
    """What reading one file saw."""

    path: str
    lines: int = 0
    blank: int = 0
    records: int = 0
    dropped: int = 0


def _coerce(value: Any, kind: Kind) -> tuple[bool, Any]:
    """Coerce a parsed value to a field kind; (False, None) when it cannot be."""
    if kind == "str":
        if isinstance(value, str):
            return True, value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return True, str(value)
        return False, None
    if kind == "scalar":
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return True, str(value)
        return False, None
    if kind == "str_list":
        if isinstance(value, str):
            return True, [value]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return True, value
        return False, None
    if kind == "str_list_list":
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return True, [value]
        if isinstance(value, list) and all(
            isinstance(v, list) and all(isinstance(s, str) for s in v) for v in value
        ):
            return True, value
        return False, None
    if isinstance(value, list) and all(
        isinstance(v, dict) and all(x is None or isinstance(x, str) for x in v.values())
        for v in value
    ):
        return True, [{k: v.get(k) for k in ("thumb", "large", "hi_res")} for v in value]
    return False, None


def sanitise(
    record: Any,
    kinds: dict[str, Kind],
    source: str,
    line: int | None,
    raw: str,
    quarantine: Quarantine,
) -> dict[str, Any] | None:
    """Keep a record's known fields with their kinds; a field of the wrong kind is nulled and
    quarantined. A record that is not an object is quarantined and dropped (None)."""
    if not isinstance(record, dict):
        quarantine.add(
            source, line, raw, f"expected an object, got {type(record).__name__}", DROPPED
        )
        return None
    out: dict[str, Any] = {}
    for name, kind in kinds.items():
        value = record.get(name)
        if value is None:
            out[name] = None
            continue
        ok, coerced = _coerce(value, kind)
        if not ok:
            quarantine.add(
                source,
                line,
                raw,
                f"field {name!r}: expected {_EXPECTED[kind]}, got {type(value).__name__}",
                FIELD_NULLED,
            )
        out[name] = coerced
    return out


def open_bytes(path: str) -> io.BufferedIOBase:
    """Open a local path or fsspec URI for reading, gunzipping it when it is gzip."""
    try:
        handle = fsspec.open(path, "rb").open()
    except FileNotFoundError as exc:
        raise InputFormatError(
            f"{path}: no such file; check dataset.interactions / dataset.items"
        ) from exc
    except OSError as exc:
        raise InputFormatError(f"{path}: cannot open ({exc})") from exc
    magic = handle.peek(2)[:2] if hasattr(handle, "peek") else b""
    if not magic:
        magic = handle.read(2)
        handle.seek(0)
    if magic == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=handle)  # type: ignore[return-value]
    return handle


def iter_line_blocks(
    path: str, block_bytes: int = BLOCK_BYTES
) -> Iterator[tuple[int, list[bytes]]]:
    """Yield (number of the first line, lines) in blocks of whole lines."""
    next_line = 1
    carry = b""
    with open_bytes(path) as handle:
        while True:
            try:
                chunk = handle.read(block_bytes)
            except (OSError, EOFError) as exc:
                raise InputFormatError(
                    f"{path}: unreadable after line {next_line - 1} ({exc}); "
                    "the file is corrupt or truncated: download it again"
                ) from exc
            if not chunk:
                break
            data = carry + chunk
            cut = data.rfind(b"\n")
            if cut < 0:
                carry = data
                continue
            lines = data[:cut].split(b"\n")
            carry = data[cut + 1 :]
            yield next_line, lines
            next_line += len(lines)
    if carry:
        yield next_line, [carry]


def _preview(line: bytes) -> str:
    return line[:RECORD_PREVIEW].decode("utf-8", errors="replace")


def read_records(
    path: str,
    kinds: dict[str, Kind],
    quarantine: Quarantine,
    *,
    parser: Literal["json", "python"] = "json",
    what: str = "JSON lines",
) -> tuple[pl.DataFrame, FileStats]:
    """Read a file of one record per line into a frame of `kinds` plus the line number.

    `parser="json"` decodes with polars in blocks; `parser="python"` parses each line with
    `ast.literal_eval` (Amazon 2014 metadata is Python literals, never passed to `eval`).
    """
    schema = {name: _DTYPES[kind] for name, kind in kinds.items()}
    full_schema = {**schema, LINE: pl.Int64()}
    stats = FileStats(path=path)
    pieces: list[pl.DataFrame] = []
    python_parse: Callable[[str], Any] = json.loads if parser == "json" else ast.literal_eval

    def slow(line_no: int, line: bytes) -> dict[str, Any] | None:
        try:
            record = python_parse(line.decode("utf-8"))
        except UnicodeDecodeError as exc:
            quarantine.add(path, line_no, _preview(line), f"not UTF-8 text ({exc})", DROPPED)
            return None
        except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError) as exc:
            reason = (
                f"not a valid {'JSON' if parser == 'json' else 'Python literal'} record ({exc})"
            )
            quarantine.add(path, line_no, _preview(line), reason, DROPPED)
            return None
        row = sanitise(record, kinds, path, line_no, _preview(line), quarantine)
        if row is not None:
            row[LINE] = line_no
        return row

    def decode(lines: list[bytes], numbers: list[int]) -> Iterator[pl.DataFrame]:
        if parser == "json":
            try:
                frame = pl.read_ndjson(io.BytesIO(b"\n".join(lines)), schema=schema)
            except pl.exceptions.PolarsError:
                frame = None
            if frame is not None and frame.height == len(lines):
                yield frame.with_columns(pl.Series(LINE, numbers, dtype=pl.Int64))
                return
            if len(lines) > 1:
                mid = len(lines) // 2
                yield from decode(lines[:mid], numbers[:mid])
                yield from decode(lines[mid:], numbers[mid:])
                return
        rows = [r for r in (slow(n, ln) for n, ln in zip(numbers, lines, strict=True)) if r]
        if rows:
            yield pl.DataFrame(rows, schema=full_schema, orient="row")

    for first, block in iter_line_blocks(path):
        stats.lines += len(block)
        kept = [(first + i, ln) for i, ln in enumerate(block) if ln.strip()]
        stats.blank += len(block) - len(kept)
        if not kept:
            continue
        numbers = [n for n, _ in kept]
        lines = [ln.rstrip(b"\r") for _, ln in kept]
        pieces.extend(decode(lines, numbers))

    frame = pl.concat(pieces, how="vertical") if pieces else pl.DataFrame(schema=full_schema)
    stats.records = frame.height
    stats.dropped = stats.lines - stats.blank - stats.records
    if stats.records == 0 and stats.lines - stats.blank > 0:
        first_bad = next((r for r in quarantine.rows if r["source_file"] == path), None)
        hint = f" (line {first_bad['line']}: {first_bad['reason']})" if first_bad else ""
        raise InputFormatError(
            f"{path}: no line could be read as {what}{hint}; "
            "check dataset.format and that this is the right file"
        )
    return frame, stats
