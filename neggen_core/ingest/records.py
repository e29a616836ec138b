"""Reading record files line by line, fast, without losing a malformed record.

A local file's lines are read by polars' streaming engine (gzip inflated in Rust) in batches
of at most `BLOCK_LINES`, blank ones counted and dropped as they come; any other file, or one
polars cannot read, is streamed in blocks of whole lines (at most `BLOCK_BYTES` and
`BLOCK_LINES` each, gzip inflated in capped steps). Either way memory follows the lines that
hold something, not the file (a gzip of a billion newlines costs nothing); a line longer than
`max_line_bytes` is quarantined unparsed. JSON lines are decoded by polars; a batch that fails
is halved until the bad lines are isolated, and only those are parsed in Python, to say why
they are bad. Every bad line or bad field is written to the quarantine with its file, line
number and reason.
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
    RECORD_PREVIEW,
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
BLOCK_LINES = 1 << 20
MAX_LINE_BYTES = 1 << 20
OFFLOAD_LINES = 4096
SURROGATE_ESCAPE = r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}"


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


def _missing(path: str) -> InputFormatError:
    return InputFormatError(f"{path}: no such file; check dataset.interactions / dataset.items")


def iter_bytes(path: str, chunk_bytes: int = BLOCK_BYTES) -> Iterator[bytes]:
    """The bytes of a local path or fsspec URI in chunks of at most `chunk_bytes`, gunzipped
    when it is gzip.

    Gzip is inflated with zlib in big steps rather than through `gzip.GzipFile`, whose
    8 KiB-at-a-time loop re-takes the GIL hundreds of times a megabyte and so stalls whenever
    another thread is busy (ingest parses metadata in a second thread). Each step's output is
    capped, so a small file that inflates to gigabytes (a gzip of newlines) is read in bounded
    memory like any other.
    """
    try:
        handle = fsspec.open(path, "rb").open()
    except FileNotFoundError as exc:
        raise _missing(path) from exc
    except OSError as exc:
        raise InputFormatError(f"{path}: cannot open ({exc})") from exc
    with handle:
        pending = handle.read(chunk_bytes // 8)
        if pending[:2] != b"\x1f\x8b":
            while pending:
                yield pending
                pending = handle.read(chunk_bytes)
            return
        inflater = zlib.decompressobj(wbits=31)
        try:
            while pending:
                piece = inflater.decompress(pending, chunk_bytes)
                if piece:
                    yield piece
                if inflater.eof and inflater.unused_data:  # a multi-member gzip file
                    pending = inflater.unused_data
                    inflater = zlib.decompressobj(wbits=31)
                    continue
                pending = inflater.unconsumed_tail or handle.read(chunk_bytes // 8)
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


@dataclass(frozen=True)
class LineBlock:
    """Whole lines of a file, joined by newlines, starting at line `first`; or one line longer
    than the limit, not kept: only its start (`data`) and its size in bytes (`too_long`)."""

    first: int
    data: bytes
    lines: int
    too_long: int | None = None


def _dense_split(first: int, data: bytes) -> Iterator[LineBlock]:
    """`data` as blocks of at most `BLOCK_LINES` lines, so that a block of very short lines
    (blank ones) does not become millions of rows at once."""
    lines = data.count(b"\n") + 1
    if lines <= BLOCK_LINES:
        yield LineBlock(first, data, lines)
        return
    cut = data.rfind(b"\n", 0, len(data) // 2 + 1)
    if cut < 0:
        cut = data.find(b"\n")
    head = data[:cut]
    yield from _dense_split(first, head)
    yield from _dense_split(first + head.count(b"\n") + 1, data[cut + 1 :])


def iter_line_blocks(path: str, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[LineBlock]:
    """The file as blocks of whole lines, in order, in bounded memory: a line that grows past
    `max_line_bytes` before its newline is skipped (a `too_long` block), never held whole.
    A block may still hold lines longer than the limit; readers check each line's length."""
    next_line = 1
    carry = b""
    skipping: tuple[bytes, int] | None = None  # (start, bytes so far) of a line being skipped

    def skip_done(rest: int) -> LineBlock:
        assert skipping is not None
        return LineBlock(next_line, skipping[0], 1, too_long=skipping[1] + rest)

    for chunk in iter_bytes(path, BLOCK_BYTES):
        if skipping is not None:
            end = chunk.find(b"\n")
            if end < 0:
                skipping = (skipping[0], skipping[1] + len(chunk))
                continue
            yield skip_done(end)
            next_line += 1
            skipping, chunk = None, chunk[end + 1 :]
        data = carry + chunk if carry else chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            carry = data
        else:
            block, carry = data[:cut], data[cut + 1 :]
            for piece in _dense_split(next_line, block):
                yield piece
                next_line += piece.lines
        if len(carry) > max_line_bytes:
            skipping, carry = (carry[:RECORD_PREVIEW], len(carry)), b""
    if skipping is not None:
        yield skip_done(0)
    elif carry:
        yield from _dense_split(next_line, carry)


def too_long_row(path: str, line: int, start: bytes, size: int, limit: int) -> dict[str, Any]:
    """The quarantine entry of a line not read because it is longer than the limit."""
    reason = (
        f"line of {size} bytes is longer than ingest.max_line_bytes ({limit}); not parsed "
        "(raise the limit to read it)"
    )
    preview = start[:RECORD_PREVIEW].decode("utf-8", errors="replace")
    return quarantine_row(path, line, preview, reason, DROPPED)


def _block_frame(path: str, block: LineBlock, quarantine: Quarantine) -> pl.DataFrame:
    """A block as a frame of (line number, line); a line that is not UTF-8 is quarantined and
    left null."""
    try:
        lines = pl.read_lines(
            io.BytesIO(block.data),
            name="line",
            row_index_name=LINE,
            row_index_offset=block.first,
        )
        return lines.with_columns(pl.col(LINE).cast(pl.Int64))
    except pl.exceptions.PolarsError:
        pass
    texts: list[str | None] = []
    for number, line in enumerate(block.data.split(b"\n"), start=block.first):
        try:
            texts.append(line.decode("utf-8"))
        except UnicodeDecodeError as exc:
            preview = line[:RECORD_PREVIEW].decode("utf-8", errors="replace")
            reason = f"not UTF-8 text ({exc})"
            quarantine.rows.append(quarantine_row(path, number, preview, reason, DROPPED))
            texts.append(None)
    numbers = pl.int_range(block.first, block.first + len(texts), dtype=pl.Int64, eager=True)
    return pl.DataFrame([numbers.alias(LINE), pl.Series("line", texts, dtype=pl.String)])


@dataclass
class _Lines:
    """A file's lines that hold something (not blank, not over the limit), and counts."""

    frames: list[pl.DataFrame] = field(default_factory=list)
    lines: int = 0
    blank: int = 0
    too_long: list[dict[str, Any]] = field(default_factory=list)

    def add(self, path: str, frame: pl.DataFrame, limit: int) -> None:
        """Keep a frame's lines that hold something, and set aside (unparsed) those longer
        than `limit` bytes; `frame` has (line number, line, its size in bytes)."""
        text = pl.col("line").str.strip_chars()
        kept = frame.filter(text.is_not_null() & (text != ""))
        long = kept.filter(pl.col(SIZE) > limit)
        for number, start, size in long.select(LINE, "line", SIZE).iter_rows():
            self.too_long.append(too_long_row(path, number, start.encode(), size, limit))
        kept = kept.filter(pl.col(SIZE) <= limit).drop(SIZE)
        if kept.height:
            self.frames.append(kept)

    def frame(self) -> pl.DataFrame:
        schema = {LINE: pl.Int64(), "line": pl.String()}
        return pl.concat(self.frames) if self.frames else pl.DataFrame(schema=schema)


SIZE = "_bytes"


def _sized(limit: int) -> list[pl.Expr]:
    """Line number, line (only its start when it is over `limit`) and its size in bytes."""
    size = pl.col("line").str.len_bytes()
    start = pl.col("line").str.slice(0, RECORD_PREVIEW)
    return [
        pl.col(LINE).cast(pl.Int64),
        pl.when(size > limit).then(start).otherwise(pl.col("line")).alias("line"),
        size.alias(SIZE),
    ]


def _scan_lines(path: str, limit: int) -> _Lines | None:
    """A local file's lines read by polars' streaming engine (gzip inflated in Rust), blank
    ones dropped and long ones cut inside the scan, so that memory follows the lines kept,
    not the file; None when polars cannot read it (not a local file, not UTF-8, bad gzip):
    the block reader then says precisely what is wrong."""
    fs, inner = fsspec.core.url_to_fs(path)
    if not isinstance(fs, LocalFileSystem):
        return None
    if not fs.exists(inner):
        raise _missing(path)
    read = _Lines()
    scan = pl.scan_lines(inner, name="line", row_index_name=LINE, row_index_offset=1)
    text = pl.col("line").str.strip_chars()
    kept = 0
    try:
        for batch in (
            scan.filter(text != "").select(_sized(limit)).collect_batches(chunk_size=BLOCK_LINES)
        ):
            kept += batch.height
            read.add(path, batch, limit)
        read.lines = scan.select(pl.len()).collect(engine="streaming").item()
    except (pl.exceptions.PolarsError, OSError):
        return None
    read.blank = read.lines - kept
    return read


def _stream_lines(path: str, quarantine: Quarantine, limit: int) -> _Lines:
    """A file's lines read block by block in Python: any fsspec file, and the one that polars
    cannot read (a line that is not UTF-8 is quarantined, a broken gzip is an error)."""
    read = _Lines()
    for block in iter_line_blocks(path, limit):
        read.lines += block.lines
        if block.too_long is not None:
            read.too_long.append(too_long_row(path, block.first, block.data, block.too_long, limit))
            continue
        frame = _block_frame(path, block, quarantine)
        text = pl.col("line").str.strip_chars()
        # polars leaves out a last empty line
        read.blank += block.lines - frame.height + frame.filter(text == "").height
        read.add(path, frame.select(_sized(limit)), limit)
    return read


def read_records(
    path: str,
    kinds: dict[str, Kind],
    quarantine: Quarantine,
    *,
    parser: Parser = "json",
    what: str = "JSON lines",
    max_line_bytes: int = MAX_LINE_BYTES,
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

    read = _scan_lines(path, max_line_bytes) or _stream_lines(path, quarantine, max_line_bytes)
    quarantine.rows.extend(read.too_long)
    stats.lines, stats.blank = read.lines, read.blank
    lines = read.frame()
    if parser == "python" and lines.height:
        slow(lines, offload=lines.height >= OFFLOAD_LINES)
    elif lines.height:
        # polars decodes a lone surrogate escape as NUL, silently: such lines go the slow way
        text = pl.col("line").str.strip_chars()
        fast = text.str.starts_with("{") & ~pl.col("line").str.contains(SURROGATE_ESCAPE)
        decode(lines.filter(fast))
        others = lines.filter(~fast)
        if others.height:
            slow(others)

    full_schema = {**schema, LINE: pl.Int64()}
    frame = (
        pl.concat(pieces, how="vertical", rechunk=True).sort(LINE)
        if pieces
        else pl.DataFrame(schema=full_schema)
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
