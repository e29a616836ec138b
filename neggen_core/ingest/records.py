"""Reading record files line by line, fast, without losing a malformed record.

Lines are read by polars (the whole file in one call, gzip inflated in Rust; big files block by
block). JSON lines are decoded by polars; a batch that fails is halved until the bad lines are
isolated, and only those are parsed in Python, to say why they are bad. Every bad line or bad
field is written to the quarantine with its file, line number and reason.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import fsspec
import polars as pl
from fsspec.implementations.local import LocalFileSystem

from neggen_core.errors import InputFormatError
from neggen_core.ingest.literals import (
    DROPPED,
    LINE,
    Kind,
    Parser,
    parse_lines,
    parse_lines_in_subprocess,
    quarantine_row,
)

_DTYPES: dict[Kind, pl.DataType] = {
    "str": pl.String(),
    "scalar": pl.String(),
    "str_list": pl.List(pl.String()),
    "str_list_list": pl.List(pl.List(pl.String())),
    "images": pl.List(
        pl.Struct({"thumb": pl.String(), "large": pl.String(), "hi_res": pl.String()})
    ),
}

BLOCK_BYTES = 32 << 20
WHOLE_FILE_BYTES = 256 << 20
OFFLOAD_LINES = 4096


@dataclass
class Quarantine:
    """Records and fields set aside, each with where it came from and why."""

    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(
        self, source_file: str, line: int | None, record: str, reason: str, action: str
    ) -> None:
        self.rows.append(quarantine_row(source_file, line, record, reason, action))

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


def records_frame(records: bytes, kinds: dict[str, Kind]) -> pl.DataFrame:
    """The frame of sanitised records given as JSON lines by `parse_lines`."""
    schema = {**{name: _DTYPES[kind] for name, kind in kinds.items()}, LINE: pl.Int64()}
    return pl.read_ndjson(io.BytesIO(records), schema=schema)


def iter_bytes(path: str, chunk_bytes: int = BLOCK_BYTES) -> Iterator[bytes]:
    """The bytes of a local path or fsspec URI in large chunks, gunzipped when it is gzip.

    Gzip is inflated with zlib in big steps rather than through `gzip.GzipFile`, whose
    8 KiB-at-a-time loop re-takes the GIL hundreds of times a megabyte and so stalls whenever
    another thread is busy (ingest parses metadata in a second thread).
    """
    try:
        handle = fsspec.open(path, "rb").open()
    except FileNotFoundError as exc:
        raise InputFormatError(
            f"{path}: no such file; check dataset.interactions / dataset.items"
        ) from exc
    except OSError as exc:
        raise InputFormatError(f"{path}: cannot open ({exc})") from exc
    with handle:
        first = handle.read(chunk_bytes // 8)
        if first[:2] != b"\x1f\x8b":
            while first:
                yield first
                first = handle.read(chunk_bytes)
            return
        inflater = zlib.decompressobj(wbits=31)
        compressed = first
        try:
            while compressed:
                yield inflater.decompress(compressed)
                while inflater.eof and inflater.unused_data:  # a multi-member gzip file
                    rest = inflater.unused_data
                    inflater = zlib.decompressobj(wbits=31)
                    yield inflater.decompress(rest)
                compressed = handle.read(chunk_bytes // 8)
            yield inflater.flush()
        except zlib.error as exc:
            raise InputFormatError(
                f"{path}: corrupt gzip data ({exc}); download the file again"
            ) from exc
        if not inflater.eof:
            raise InputFormatError(
                f"{path}: the gzip stream ends early: the file is truncated; download it again"
            )


def read_bytes(path: str) -> bytes:
    """The whole (gunzipped) content of a file."""
    return b"".join(iter_bytes(path))


def iter_line_blocks(path: str) -> Iterator[tuple[int, bytes, int]]:
    """Yield (number of the first line, block, lines in it); a block is whole lines joined by
    newlines."""
    next_line = 1
    carry = b""
    for chunk in iter_bytes(path):
        data = carry + chunk if carry else chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            carry = data
            continue
        block, carry = data[:cut], data[cut + 1 :]
        count = block.count(b"\n") + 1
        yield next_line, block, count
        next_line += count
    if carry:
        yield next_line, carry, carry.count(b"\n") + 1


def _polars_lines(path: str) -> pl.DataFrame | None:
    """The whole file as (line number, line) in one polars call (gzip inflated in Rust), or
    None when it is too big for memory or polars cannot read it (bad UTF-8, bad gzip): the
    streaming path then reads it and says precisely what is wrong."""
    fs, inner = fsspec.core.url_to_fs(path)
    try:
        if fs.size(inner) > WHOLE_FILE_BYTES:
            return None
        source = inner if isinstance(fs, LocalFileSystem) else io.BytesIO(fs.cat_file(inner))
        lines = pl.read_lines(source, name="line", row_index_name=LINE, row_index_offset=1)
    except FileNotFoundError as exc:
        raise InputFormatError(
            f"{path}: no such file; check dataset.interactions / dataset.items"
        ) from exc
    except (pl.exceptions.PolarsError, OSError):
        return None
    return lines.with_columns(pl.col(LINE).cast(pl.Int64))


def _block_lines(path: str, quarantine: Quarantine) -> Iterator[pl.DataFrame]:
    """The file as frames of (line number, line), block by block; a line that is not UTF-8
    is quarantined and left null."""
    for first, block, _ in iter_line_blocks(path):
        texts: list[str | None]
        try:
            texts = list(block.decode("utf-8").split("\n"))
        except UnicodeDecodeError:
            texts = []
            for number, line in enumerate(block.split(b"\n"), start=first):
                try:
                    texts.append(line.decode("utf-8"))
                except UnicodeDecodeError as exc:
                    preview = line[:500].decode("utf-8", errors="replace")
                    reason = f"not UTF-8 text ({exc})"
                    quarantine.rows.append(quarantine_row(path, number, preview, reason, DROPPED))
                    texts.append(None)
        numbers = pl.int_range(first, first + len(texts), dtype=pl.Int64, eager=True)
        yield pl.DataFrame([numbers.alias(LINE), pl.Series("line", texts, dtype=pl.String)])


def read_records(
    path: str,
    kinds: dict[str, Kind],
    quarantine: Quarantine,
    *,
    parser: Parser = "json",
    what: str = "JSON lines",
) -> tuple[pl.DataFrame, FileStats]:
    """Read a file of one record per line into a frame of `kinds` plus the line number.

    `parser="json"` decodes with polars; a batch that fails is halved until the bad lines are
    isolated, and only those are parsed in Python (to say why). `parser="python"` parses each
    line with `ast.literal_eval` (Amazon 2014 metadata is Python literals, never passed to
    `eval`), in a subprocess for large files so that it runs beside the rest of the ingest
    rather than competing with it for the GIL.
    """
    schema = {name: _DTYPES[kind] for name, kind in kinds.items()}
    struct = pl.Struct(schema)
    stats = FileStats(path=path)
    pieces: list[pl.DataFrame] = []

    def slow(lines: pl.DataFrame, offload: bool = False) -> None:
        parse = parse_lines_in_subprocess if offload else parse_lines
        raw = [line.encode("utf-8", errors="surrogateescape") for line in lines.get_column("line")]
        records, bad = parse(path, lines.get_column(LINE).to_list(), raw, kinds, parser)
        quarantine.rows.extend(bad)
        if records:
            pieces.append(records_frame(records, kinds))

    def decode(lines: pl.DataFrame) -> None:
        try:
            decoded = lines.select(LINE, pl.col("line").str.json_decode(struct).alias("record"))
        except pl.exceptions.PolarsError:
            if lines.height == 1:
                slow(lines)
            else:
                decode(lines.slice(0, lines.height // 2))
                decode(lines.slice(lines.height // 2))
            return
        pieces.append(decoded.unnest("record").select(*schema, LINE))

    whole = _polars_lines(path)
    for block in [whole] if whole is not None else _block_lines(path, quarantine):
        text = pl.col("line").str.strip_chars()
        lines = block.filter(text.is_not_null() & (text != ""))
        stats.lines += block.height
        stats.blank += block.filter(text == "").height
        if lines.height == 0:
            continue
        if parser == "python":
            slow(lines, offload=lines.height >= OFFLOAD_LINES)
            continue
        is_object = text.str.starts_with("{")
        decode(lines.filter(is_object))
        others = lines.filter(~is_object)
        if others.height:
            slow(others)

    full_schema = {**schema, LINE: pl.Int64()}
    frame = (
        pl.concat(pieces, how="vertical").sort(LINE) if pieces else pl.DataFrame(schema=full_schema)
    )
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
