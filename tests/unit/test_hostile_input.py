"""Inputs that once crashed ingest or changed values silently: each now ends as a quarantine
row with its reason, or a clear error naming the file (issue 15)."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest

from neggen_core.errors import InputFormatError
from neggen_core.ingest import records
from neggen_core.ingest.compute import IngestResult
from neggen_core.ingest.job import ingest_files
from tests.support.helpers import write_lines

USERS, ITEMS = 6, 5


def _reviews(path: Path, extra: list[str] = ()) -> str:
    """Amazon 2023 reviews: every user rated every item, one second apart."""
    lines = [
        json.dumps(
            {
                "user_id": f"U{u}",
                "parent_asin": f"I{i}",
                "rating": 5,
                "timestamp": 1_600_000_000_000 + 1000 * (u * ITEMS + i),
            }
        )
        for u in range(USERS)
        for i in range(ITEMS)
    ]
    return write_lines(path, [*lines, *extra])


def _meta(path: Path, prices: list[object] | None = None, extra: list[str] = ()) -> str:
    prices = prices or [3.5] * ITEMS
    lines = [
        json.dumps({"parent_asin": f"I{i}", "title": f"item {i}", "price": price})
        for i, price in enumerate(prices)
    ]
    return write_lines(path, [*lines, *extra])


def _rows(result: IngestResult) -> list[tuple[int | None, str, str]]:
    """(line, action, reason) per quarantined record, in line order."""
    frame = result.quarantine.sort("source_file", "line", nulls_last=True)
    return [(r["line"], r["action"], r["reason"]) for r in frame.iter_rows(named=True)]


def test_malformed_metadata_lines_among_many_good_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Good and bad lines decoded apart, in many blocks, then joined: every good record kept,
    every bad line named (this once ended in a polars panic in the quarantine path)."""
    monkeypatch.setattr(records, "BLOCK_BYTES", 4096)
    good = [
        json.dumps(
            {
                "parent_asin": f"I{k}" if k < ITEMS else f"X{k}",
                "title": f"t{k}",
                "description": ["d"],
                "categories": ["Office"],
                "price": "abc" if k == 1500 else 2.5,
                "images": [{"thumb": None, "large": f"https://img/{k}.jpg", "hi_res": None}],
            }
        )
        for k in range(3000)
    ]
    lines, bad_lines = [], []
    for k, line in enumerate(good):
        lines.append(line)
        if k % 700 == 350:
            lines.append('{"parent_asin": "Z", broken')
            bad_lines.append(len(lines))
    meta = write_lines(tmp_path / "meta.jsonl", lines)
    result = ingest_files("amazon2023", _reviews(tmp_path / "r.jsonl"), meta, 1)
    quarantined = _rows(result)
    assert [q[0] for q in quarantined if q[1] == "dropped"] == bad_lines
    [price] = [q for q in quarantined if q[1] == "field_nulled"]
    assert price[2].startswith("unparsable price 'abc'")
    assert result.report["metadata"]["metadata_records"] == len(good)
    assert result.items["image_uri"].to_list() == [f"https://img/{i}.jpg" for i in range(ITEMS)]


def test_a_lone_surrogate_is_quarantined_not_a_crash(tmp_path: Path) -> None:
    """`"\\ud800"` is valid JSON but no valid text: the field is nulled and said; an id
    nulled so drops its record, also said."""
    reviews = _reviews(
        tmp_path / "r.jsonl",
        ['{"user_id": "U\\ud800", "parent_asin": "I1", "rating": 5, "timestamp": 1600000000000}'],
    )
    meta = _meta(tmp_path / "m.jsonl", extra=['{"parent_asin": "I9", "title": "x\\udc00"}'])
    result = ingest_files("amazon2023", reviews, meta, 1)
    line = USERS * ITEMS + 1
    assert _rows(result) == [
        (
            ITEMS + 1,
            "field_nulled",
            "field 'title': not valid Unicode text (a lone surrogate escape)",
        ),
        (line, "field_nulled", "field 'user_id': not valid Unicode text (a lone surrogate escape)"),
        (line, "dropped", "missing user id"),
    ]
    assert result.users.height == USERS


def test_lone_surrogate_keys_of_an_index_document(tmp_path: Path) -> None:
    users = {f"u{u}": [0, 1, 2] for u in range(4)}
    inter = tmp_path / "d.inter.json"
    inter.write_text(json.dumps(users)[:-1] + ', "bad\\ud800": [0, 1]}')
    items = tmp_path / "d.item.json"
    items.write_text('{"0": {"title": "a"}, "1": {"title": "b\\ud800"}, "2\\udc00": {}}')
    result = ingest_files("index_json", str(inter), str(items), 0)
    reasons = sorted(result.quarantine["reason"].to_list())
    assert reasons == [
        "field 'title': not valid Unicode text (a lone surrogate escape)",
        "item id '2\\udc00' is not valid Unicode text (a lone surrogate escape)",
        "user id 'bad\\ud800' is not valid Unicode text (a lone surrogate escape)",
    ]
    assert result.users.height == 4


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", r"no interaction records \(0 lines, 0 blank, 0 quarantined\)"),
        ("\n\n\n", r"no interaction records \(3 lines, 3 blank, 0 quarantined\)"),
        ("{broken\n", r"no line could be read as Amazon 2023 review JSON lines"),
    ],
)
def test_no_interactions_is_a_clear_error(tmp_path: Path, content: str, message: str) -> None:
    """An empty file once committed an ingest of 0 users, and the next stage failed."""
    empty = tmp_path / "reviews.jsonl"
    empty.write_text(content)
    with pytest.raises(InputFormatError, match=rf"{re.escape(str(empty))}: {message}"):
        ingest_files("amazon2023", str(empty), _meta(tmp_path / "m.jsonl"), 1)


def test_k_core_that_leaves_nothing_names_the_step(tmp_path: Path) -> None:
    reviews = _reviews(tmp_path / "r.jsonl")
    with pytest.raises(
        InputFormatError, match=r"no interaction left after the 'k_core' step.*lower ingest.k_core"
    ):
        ingest_files("amazon2023", reviews, _meta(tmp_path / "m.jsonl"), 50)


def test_ambiguous_and_negative_prices_are_quarantined(tmp_path: Path) -> None:
    """ "12,99" once became 1299.0, "$1,2,3" 123.0 and "-5" -5.0, with nothing said."""
    prices = ["12,99", "$1,2,3", "-5", "$1,299.00", "1,299"]
    result = ingest_files(
        "amazon2023", _reviews(tmp_path / "r.jsonl"), _meta(tmp_path / "m.jsonl", prices), 1
    )
    assert result.items["price"].to_list() == [None, None, None, 1299.0, 1299.0]
    comma = "(a comma is read only as a thousands separator, as in 1,299.00)"
    kept = "record kept with price null"
    assert _rows(result) == [
        (1, "field_nulled", f"ambiguous price '12,99' {comma}; {kept}"),
        (2, "field_nulled", f"ambiguous price '$1,2,3' {comma}; {kept}"),
        (3, "field_nulled", f"price '-5' is out of range (a price is not negative); {kept}"),
    ]
    assert result.report["metadata"]["unparsable_prices"] == 3


def test_out_of_range_timestamps_are_quarantined(tmp_path: Path) -> None:
    """A timestamp past int64 once became null with no quarantine row."""
    extra = [
        '{"user_id": "U1", "parent_asin": "I0", "rating": 4, "timestamp": 99999999999999999999}',
        '{"user_id": "U2", "parent_asin": "I0", "rating": 4, "timestamp": -5}',
    ]
    result = ingest_files(
        "amazon2023", _reviews(tmp_path / "r.jsonl", extra), _meta(tmp_path / "m.jsonl"), 1
    )
    line = USERS * ITEMS
    unix = "is out of range (Unix time between 1970 and 2100); record kept with timestamp null"
    assert _rows(result) == [
        (line + 1, "field_nulled", f"timestamp '99999999999999999999' {unix}"),
        (line + 2, "field_nulled", f"timestamp '-5' {unix}"),
    ]
    assert result.report["unparsable_timestamps"] == 2


@pytest.fixture(params=["scan", "blocks", "tiny-blocks"])
def reader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Polars' streaming scan (local files), and the Python block reader (any other file, or
    one polars cannot read) with big blocks and with blocks smaller than a long line."""
    if request.param != "scan":
        monkeypatch.setattr(records, "_scan_lines", lambda path, limit: None)
    if request.param == "tiny-blocks":
        monkeypatch.setattr(records, "BLOCK_BYTES", 1 << 16)
    return request.param


@pytest.mark.parametrize("gz", [False, True])
def test_a_line_over_the_limit_is_quarantined_unparsed(
    tmp_path: Path, reader: str, gz: bool
) -> None:
    """Long lines in a JSON file, Python literals and a TSV: each one quarantined with its
    size, unparsed, nothing else lost; the block reader skips a line longer than its blocks
    without holding it whole. (A 5 MB Python-literal line once took 2.3 GB to parse.)"""
    long_json = '{"user_id": "U1", "parent_asin": "I9", "text": "' + "x" * 3_000_000 + '"}'
    name = "r.jsonl.gz" if gz else "r.jsonl"
    reviews = _reviews(tmp_path / "x.jsonl", [long_json])
    data = Path(reviews).read_bytes()
    (tmp_path / name).write_bytes(gzip.compress(data) if gz else data)
    literal = "{'asin': 'I9', 'title': '" + "y" * 5000 + "'}"
    meta14 = write_lines(tmp_path / "m14.txt", ["{'asin': 'I0', 'title': 't'}", literal])
    reviews14 = write_lines(
        tmp_path / "r14.jsonl",
        [
            json.dumps({"reviewerID": f"U{u}", "asin": f"I{i}", "overall": 5})
            for u in range(3)
            for i in range(3)
        ],
    )
    inter = write_lines(
        tmp_path / "d.inter",
        ["userID\titemID", *(f"{u}\t{i}" for u in range(3) for i in range(3)), "9\t" + "7" * 5000],
    )

    result = ingest_files("amazon2023", str(tmp_path / name), _meta(tmp_path / "m.jsonl"), 1)
    assert _rows(result) == [
        (
            USERS * ITEMS + 1,
            "dropped",
            f"line of {len(long_json)} bytes is longer than ingest.max_line_bytes (1048576); "
            "not parsed (raise the limit to read it)",
        )
    ]
    assert result.quarantine["record"][0] == long_json[:500]

    small = ingest_files("amazon2014", reviews14, meta14, 0, max_line_bytes=4096)
    assert [(q[0], q[2].split(";")[0]) for q in _rows(small)] == [
        (2, f"line of {len(literal)} bytes is longer than ingest.max_line_bytes (4096)")
    ]
    tsv = ingest_files("mmrec", inter, None, 0, max_line_bytes=4096)
    assert [q[0] for q in _rows(tsv)] == [11] and tsv.interactions.height == 9


def test_a_newline_bomb_is_read_in_bounded_blocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reader: str
) -> None:
    """A 50 KB gzip of 50 M newlines once took 1.7 GB: inflated in capped steps and read in
    batches of at most `BLOCK_LINES` lines, blank ones dropped as they come, it is read like
    any file (bench/ingest_bounds.py measures the memory)."""
    monkeypatch.setattr(records, "BLOCK_LINES", 1000)
    reviews = Path(_reviews(tmp_path / "r.jsonl")).read_bytes()
    bomb = tmp_path / "bomb.jsonl.gz"
    bomb.write_bytes(gzip.compress(b"\n" * 2_000_000 + reviews))
    chunk = 1 << 16
    pieces = list(records.iter_bytes(str(bomb), chunk_bytes=chunk))
    assert max(len(p) for p in pieces) <= chunk
    assert b"".join(pieces) == b"\n" * 2_000_000 + reviews
    blocks = list(records.iter_line_blocks(str(bomb)))
    assert max(b.lines for b in blocks) <= 1000
    assert sum(b.lines for b in blocks) == 2_000_000 + USERS * ITEMS
    result = ingest_files("amazon2023", str(bomb), _meta(tmp_path / "m.jsonl"), 1)
    assert result.interactions.height == USERS * ITEMS and result.quarantine.height == 0
    assert result.report["files"][0]["blank"] == 2_000_000


def test_a_surrogate_pair_is_read_as_its_character(tmp_path: Path) -> None:
    """Lines with surrogate escapes take the slow path, which joins a valid pair."""
    path = write_lines(tmp_path / "m.jsonl", ['{"title": "smile \\ud83d\\ude00"}'])
    frame, _ = records.read_records(path, {"title": "str"}, records.Quarantine())
    assert frame["title"].to_list() == ["smile \N{GRINNING FACE}"]
