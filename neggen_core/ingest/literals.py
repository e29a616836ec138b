"""Parsing and checking single records in plain Python, with no heavy imports, so that it can
start fast in a subprocess: the slow path for bad JSON lines, and Python-literal lines.

Records come back as JSON lines of exactly the declared kinds (plus the line number), which
polars then decodes with the declared schema in one call."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from collections.abc import Callable
from itertools import accumulate, pairwise
from typing import Any, Literal

Kind = Literal["str", "scalar", "str_list", "str_list_list", "images"]
Parser = Literal["json", "python"]

LINE = "_line"
RECORD_PREVIEW = 500
DROPPED = "dropped"
FIELD_NULLED = "field_nulled"

EXPECTED: dict[Kind, str] = {
    "str": "a string",
    "scalar": "a number or a string",
    "str_list": "a list of strings",
    "str_list_list": "a list of lists of strings",
    "images": "a list of {thumb, large, hi_res} objects",
}
_PARSERS: dict[Parser, tuple[Callable[[str], Any], str]] = {
    "json": (json.loads, "JSON"),
    "python": (ast.literal_eval, "Python literal"),
}


ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def quarantine_row(
    source_file: str, line: int | None, record: str, reason: str, action: str
) -> dict[str, Any]:
    """One quarantine entry: where the record came from, what was done and why."""
    return {
        "source_file": source_file,
        "line": line,
        "record": record[:RECORD_PREVIEW],
        "reason": reason,
        "action": action,
    }


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


def is_unicode(value: Any) -> bool:
    """Whether every string in a coerced value is encodable text (JSON and Python literals
    can spell a lone surrogate, `"\\ud800"`, which no UTF-8 table can hold)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, list):
        return all(is_unicode(v) for v in value)
    if isinstance(value, dict):
        return all(is_unicode(v) for v in value.values())
    return True


def sanitise(
    record: Any,
    kinds: dict[str, Kind],
    source: str,
    line: int | None,
    raw: str,
    sink: list[dict[str, Any]],
) -> dict[str, Any] | None:
    """Keep a record's known fields with their kinds; a field of the wrong kind is nulled and
    quarantined into `sink`. A record that is not an object is quarantined and dropped (None)."""
    if not isinstance(record, dict):
        reason = f"expected an object, got {type(record).__name__}"
        sink.append(quarantine_row(source, line, raw, reason, DROPPED))
        return None
    out: dict[str, Any] = {}
    for name, kind in kinds.items():
        value = record.get(name)
        if value is None:
            out[name] = None
            continue
        ok, coerced = _coerce(value, kind)
        if not ok:
            reason = f"field {name!r}: expected {EXPECTED[kind]}, got {type(value).__name__}"
            sink.append(quarantine_row(source, line, raw, reason, FIELD_NULLED))
        elif not is_unicode(coerced):
            reason = f"field {name!r}: not valid Unicode text (a lone surrogate escape)"
            sink.append(quarantine_row(source, line, raw, reason, FIELD_NULLED))
            coerced = None
        out[name] = coerced
    return out


def parse_lines(
    source: str,
    numbers: list[int],
    lines: list[bytes],
    kinds: dict[str, Kind],
    parser: Parser,
) -> tuple[bytes, list[dict[str, Any]]]:
    """Parse and sanitise lines one by one: (the records as JSON lines, quarantine rows).

    Python literals go through `ast.literal_eval`, never `eval`."""
    parse, what = _PARSERS[parser]
    rows: list[str] = []
    sink: list[dict[str, Any]] = []
    for number, line in zip(numbers, lines, strict=True):
        preview = line[:RECORD_PREVIEW].decode("utf-8", errors="replace")
        try:
            record = parse(line.decode("utf-8"))
        except UnicodeDecodeError as exc:
            sink.append(quarantine_row(source, number, preview, f"not UTF-8 text ({exc})", DROPPED))
            continue
        except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError) as exc:
            # `ast` names the offending node with its memory address: dropped, so that a rerun
            # quarantines the same line with the same reason
            reason = f"not a valid {what} record ({ADDRESS.sub('', str(exc))})"
            sink.append(quarantine_row(source, number, preview, reason, DROPPED))
            continue
        row = sanitise(record, kinds, source, number, preview, sink)
        if row is not None:
            row[LINE] = number
            rows.append(json.dumps(row))
    return "\n".join(rows).encode(), sink


def parse_lines_in_subprocess(
    source: str,
    numbers: list[int],
    lines: list[bytes],
    kinds: dict[str, Kind],
    parser: Parser,
) -> tuple[bytes, list[dict[str, Any]]]:
    """`parse_lines` in a fresh Python process (`python -m neggen_core.ingest.literals`), so
    that pure-Python parsing runs on another core instead of holding this process's GIL.
    The caller waits with the GIL released; the data travels over pipes as JSON and raw bytes."""
    done = subprocess.run(
        [sys.executable, "-m", "neggen_core.ingest.literals"],
        input=encode_request(source, numbers, lines, kinds, parser),
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{source}: the record parser process failed (exit {done.returncode}): "
            f"{done.stderr.decode(errors='replace')[-2000:]}"
        )
    return decode_response(done.stdout)


def encode_request(
    source: str, numbers: list[int], lines: list[bytes], kinds: dict[str, Kind], parser: Parser
) -> bytes:
    """A JSON header line (the lines' lengths among it), then the lines' bytes as they are."""
    header = {
        "source": source,
        "numbers": numbers,
        "sizes": [len(line) for line in lines],
        "kinds": kinds,
        "parser": parser,
    }
    return json.dumps(header).encode() + b"\n" + b"".join(lines)


def decode_request(
    data: bytes,
) -> tuple[str, list[int], list[bytes], dict[str, Kind], Parser]:
    """The arguments of `parse_lines` from `encode_request`'s bytes, checked."""
    head, _, body = data.partition(b"\n")
    header = json.loads(head)
    offsets = list(accumulate(header["sizes"], initial=0))
    if offsets[-1] != len(body) or len(header["numbers"]) != len(offsets) - 1:
        raise ValueError("the request's lines do not match their lengths and numbers")
    if header["parser"] not in _PARSERS or not set(header["kinds"].values()) <= set(EXPECTED):
        raise ValueError("unknown parser or field kind in the request")
    lines = [body[start:end] for start, end in pairwise(offsets)]
    return header["source"], header["numbers"], lines, header["kinds"], header["parser"]


def encode_response(records: bytes, sink: list[dict[str, Any]]) -> bytes:
    """The quarantine rows as one JSON line, then the records (JSON lines) as they are."""
    return json.dumps(sink).encode() + b"\n" + records


def decode_response(data: bytes) -> tuple[bytes, list[dict[str, Any]]]:
    head, _, records = data.partition(b"\n")
    sink: list[dict[str, Any]] = json.loads(head)
    return records, sink


def _main() -> None:
    request = decode_request(sys.stdin.buffer.read())
    sys.stdout.buffer.write(encode_response(*parse_lines(*request)))


if __name__ == "__main__":
    _main()
