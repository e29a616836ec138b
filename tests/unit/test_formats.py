"""Each input format on a tiny fixture written from its description, with malformed records.

Every fixture's quarantine is asserted exactly: which file, which line, what was done, and why.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import polars as pl
import pytest

from neggen_core.errors import InputFormatError
from neggen_core.ingest import records
from neggen_core.ingest.compute import IngestResult
from neggen_core.ingest.job import ingest_files
from tests.support.helpers import write_lines


def ingest(fmt: str, interactions: str, items: str | None, k: int = 0) -> IngestResult:
    return ingest_files(fmt, interactions, items, k)


def quarantined(result: IngestResult) -> list[tuple[str, int | None, str, str]]:
    """(file name, line, action, reason) per quarantined record, in file and line order."""
    rows = result.quarantine.sort("source_file", "line", nulls_last=True).iter_rows(named=True)
    return [(Path(r["source_file"]).name, r["line"], r["action"], r["reason"]) for r in rows]


def splits(result: IngestResult) -> dict[tuple[str, str], str]:
    """(user_id, item_id) -> split."""
    users = result.users.select("user_idx", "user_id")
    items = result.items.select("item_idx", "item_id")
    joined = result.interactions.join(users, on="user_idx").join(items, on="item_idx")
    return {(r["user_id"], r["item_id"]): r["split"] for r in joined.iter_rows(named=True)}


def review(user: str | None, item: str, rating: object, time: object) -> str:
    record = {"asin": item, "overall": rating, "unixReviewTime": time, "reviewText": "fine"}
    if user is not None:
        record["reviewerID"] = user
    return json.dumps(record)


@pytest.fixture(params=["scan", "blocks", "subprocess"])
def read_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The three ways a line file is read must give the same result: by polars' streaming
    scan, by the Python block reader in tiny blocks (remote files, bad UTF-8), and Python
    literals in a subprocess."""
    if request.param == "blocks":
        monkeypatch.setattr(records, "_scan_lines", lambda path, limit: None)
        monkeypatch.setattr(records, "BLOCK_BYTES", 64)
    if request.param == "subprocess":
        monkeypatch.setattr(records, "OFFLOAD_LINES", 1)
    return request.param


def test_amazon2014_gzip(tmp_path: Path, read_mode: str) -> None:
    reviews = write_lines(
        tmp_path / "reviews.json.gz",
        [
            review("U1", "I1", 5.0, 100),
            review("U1", "I2", 4.0, 200),
            review("U1", "I3", "five", 300),
            "",
            review("U2", "I1", 3.0, 150),
            '{"reviewerID": "U2", "asin": "I2", broken',
            review(None, "I3", 2.0, 10),
            review("U2", "I3", 1.0, 400),
            review("U2", "I2", 2.0, 500),
            '["not", "an", "object"]',
            review("U3", "I1", 5, 50),
            review("U3", "I2", 5, 60),
            review("U3", "I3", 5, 70),
            review("U3", "I3", 4, 80),
        ],
        gz=True,
    )
    pwned = tmp_path / "PWNED"
    meta = write_lines(
        tmp_path / "meta.json.gz",
        [
            "{'asin': 'I1', 'title': 'Red Mug &amp; Co', "
            "'categories': [['Home', 'Kitchen'], ['Home', 'Mugs']], 'price': 9.99, "
            "'imUrl': 'http://x/i1.jpg'}",
            "{'asin': 'I2', 'title': 'Blue Mug', 'categories': [['Home']], 'price': 'n/a', "
            "'imUrl': 'img/i2.png'}",
            "{'asin': 'I3', 'title': broken",
            f"__import__('os').system('touch {pwned}')",
            "{'asin': 'I4', 'title': 'Never bought'}",
            "{'asin': 'I1', 'title': 'A second record for I1'}",
            "{'asin': 'I3', 'title': 'Green Mug', 'categories': 'Home', "
            "'description': \"It's green\"}",
        ],
        gz=True,
    )
    result = ingest("amazon2014", reviews, meta)

    assert not pwned.exists()
    q = quarantined(result)
    assert [(f, line, action) for f, line, action, _ in q] == [
        ("meta.json.gz", 2, "field_nulled"),
        ("meta.json.gz", 3, "dropped"),
        ("meta.json.gz", 4, "dropped"),
        ("meta.json.gz", 6, "dropped"),
        ("meta.json.gz", 7, "field_nulled"),
        ("reviews.json.gz", 3, "field_nulled"),
        ("reviews.json.gz", 6, "dropped"),
        ("reviews.json.gz", 7, "dropped"),
        ("reviews.json.gz", 10, "dropped"),
    ]
    reasons = [reason for *_, reason in q]
    assert reasons[0] == "unparsable price 'n/a'; record kept with price null"
    assert reasons[1].startswith("not a valid Python literal record")
    assert reasons[3] == "duplicate metadata for item I1; the first record is kept"
    assert reasons[4] == "field 'categories': expected a list of lists of strings, got str"
    assert reasons[5] == "unparsable rating 'five'; record kept with rating null"
    assert reasons[6].startswith("not a valid JSON record")
    assert reasons[7] == "missing user id"
    assert reasons[8] == "expected an object, got list"

    assert result.report["steps"][1] == {
        "step": "duplicates",
        "rows_in": 10,
        "rows_out": 9,
        "dropped": 1,
    }
    assert result.users.get_column("user_id").to_list() == ["U1", "U2", "U3"]
    assert splits(result) == {
        ("U1", "I1"): "train",
        ("U1", "I2"): "valid",
        ("U1", "I3"): "test",
        ("U2", "I1"): "train",
        ("U2", "I3"): "valid",
        ("U2", "I2"): "test",
        ("U3", "I1"): "train",
        ("U3", "I2"): "valid",
        ("U3", "I3"): "test",
    }
    kept_i3 = result.interactions.join(result.users, on="user_idx").filter(
        (pl.col("user_id") == "U3") & (pl.col("item_idx") == 2)
    )
    assert kept_i3.select("rating", "timestamp").row(0) == (5.0, 70)
    items = {r["item_id"]: r for r in result.items.iter_rows(named=True)}
    assert set(items) == {"I1", "I2", "I3"}
    assert items["I1"]["title"] == "Red Mug & Co"
    assert items["I1"]["categories"] == ["Home", "Kitchen", "Mugs"]
    assert items["I1"]["price"] == 9.99
    assert items["I1"]["image_uri"] == "http://x/i1.jpg"
    assert items["I2"]["price"] is None
    assert items["I2"]["image_uri"] == "img/i2.png"  # relative to the metadata file's folder
    assert items["I3"] | {"item_idx": 0} == {
        "item_idx": 0,
        "item_id": "I3",
        "title": "Green Mug",
        "description": "It's green",
        "brand": None,
        "categories": [],
        "price": None,
        "image_uri": None,
    }
    assert result.report["metadata"]["duplicate_metadata"] == 1


def test_amazon2018_plain(tmp_path: Path) -> None:
    reviews = write_lines(
        tmp_path / "reviews.json",
        [
            review(u, i, 4.0, t)
            for t, (u, i) in enumerate(
                [("U1", "I1"), ("U1", "I2"), ("U2", "I2"), ("U2", "I3"), ("U2", "I4"), ("U1", "I5")]
            )
        ]
        + [review("U1", "I3", 3.0, "yesterday")],
    )
    meta = write_lines(
        tmp_path / "meta.json",
        [
            json.dumps(
                {
                    "asin": "I1",
                    "title": "Mug",
                    "description": ["Big", "mug"],
                    "feature": ["dishwasher safe"],
                    "brand": "Acme",
                    "category": ["Home", "Kitchen"],
                    "price": "$12.99",
                    "imageURL": ["http://s/1.jpg"],
                    "imageURLHighRes": ["http://h/1.jpg"],
                }
            ),
            json.dumps(
                {"asin": "I2", "title": "Cup", "price": "$1,299.00", "imageURL": ["http://s/2.jpg"]}
            ),
            json.dumps(
                {"asin": "I3", "title": "Jar", "price": ".a-box-inner{background-color:#fff}"}
            ),
            json.dumps({"asin": "I4", "price": "", "description": "a plain string"}),
            json.dumps({"asin": "I5", "description": {"bad": 1}, "price": 3}),
            '{"asin": "I6", "title": ',
        ],
    )
    result = ingest("amazon2018", reviews, meta)
    assert [(f, line, action, reason) for f, line, action, reason in quarantined(result)] == [
        (
            "meta.json",
            3,
            "field_nulled",
            "unparsable price '.a-box-inner{background-color:#fff}'; record kept with price null",
        ),
        (
            "meta.json",
            5,
            "field_nulled",
            "field 'description': expected a list of strings, got dict",
        ),
        ("meta.json", 6, "dropped", quarantined(result)[2][3]),
        (
            "reviews.json",
            7,
            "field_nulled",
            "unparsable timestamp 'yesterday'; record kept with timestamp null",
        ),
    ]
    assert quarantined(result)[2][3].startswith("not a valid JSON record")
    items = {r["item_id"]: r for r in result.items.iter_rows(named=True)}
    assert items["I1"]["description"] == "Big\nmug\ndishwasher safe"
    assert items["I1"]["categories"] == ["Home", "Kitchen"]
    assert items["I1"]["price"] == 12.99
    assert items["I1"]["image_uri"] == "http://h/1.jpg"
    assert items["I2"]["price"] == 1299.0
    assert items["I2"]["image_uri"] == "http://s/2.jpg"
    assert items["I3"]["price"] is None
    assert items["I4"]["description"] == "a plain string"
    assert items["I5"]["price"] == 3.0
    # the interaction with no timestamp sorts last: it is U1's test item
    assert splits(result)[("U1", "I3")] == "test"


def test_amazon2023_jsonl(tmp_path: Path) -> None:
    def r(user: str | None, parent: str | None, rating: object, ms: int, asin: str = "A") -> str:
        record = {
            "rating": rating,
            "title": "t",
            "text": "x",
            "images": [],
            "asin": asin,
            "parent_asin": parent,
            "timestamp": ms,
            "helpful_vote": 0,
            "verified_purchase": True,
        }
        if user is not None:
            record["user_id"] = user
        return json.dumps(record)

    reviews = write_lines(
        tmp_path / "All_Beauty.jsonl.gz",
        [
            r("U1", "P1", 5.0, 1_588_687_728_923),
            r("U1", "P2", "abc", 1_588_687_729_000),
            r("U1", None, 4.0, 1_588_687_730_000, asin="P3"),
            r(None, "P1", 1.0, 1),
            r("U2", "P1", 2.0, 1_600_000_000_000),
        ],
        gz=True,
    )
    meta = write_lines(
        tmp_path / "meta_All_Beauty.jsonl.gz",
        [
            json.dumps(
                {
                    "main_category": "All Beauty",
                    "title": "Soap",
                    "average_rating": 4.8,
                    "rating_number": 10,
                    "features": ["lavender"],
                    "description": ["Mild soap"],
                    "price": None,
                    "images": [
                        {
                            "thumb": "https://img/t1.jpg",
                            "large": "https://img/l1.jpg",
                            "variant": "MAIN",
                            "hi_res": None,
                        }
                    ],
                    "videos": [],
                    "store": "Acme",
                    "categories": [],
                    "details": {"Size": "1 oz"},
                    "parent_asin": "P1",
                    "bought_together": None,
                }
            ),
            json.dumps(
                {
                    "main_category": "All Beauty",
                    "title": "Gel",
                    "price": "None",
                    "store": "B",
                    "categories": ["Beauty", "Hair"],
                    "images": "oops",
                    "parent_asin": "P2",
                }
            ),
            json.dumps({"title": "Lotion", "price": 7.5, "parent_asin": "P3", "images": []}),
            '{"parent_asin": "P4", "title": "Trunc',
        ],
        gz=True,
    )
    result = ingest("amazon2023", reviews, meta)
    q = quarantined(result)
    assert [(f, line, action) for f, line, action, _ in q] == [
        ("All_Beauty.jsonl.gz", 2, "field_nulled"),
        ("All_Beauty.jsonl.gz", 4, "dropped"),
        ("meta_All_Beauty.jsonl.gz", 2, "field_nulled"),
        ("meta_All_Beauty.jsonl.gz", 4, "dropped"),
    ]
    assert q[0][3] == "unparsable rating 'abc'; record kept with rating null"
    assert q[1][3] == "missing user id"
    assert q[2][3] == "field 'images': expected a list of {thumb, large, hi_res} objects, got str"
    items = {r["item_id"]: r for r in result.items.iter_rows(named=True)}
    assert items["P1"]["image_uri"] == "https://img/l1.jpg"
    assert items["P1"]["categories"] == ["All Beauty"]
    assert items["P1"]["brand"] == "Acme"
    assert items["P1"]["description"] == "Mild soap\nlavender"
    assert items["P1"]["price"] is None
    assert items["P2"]["categories"] == ["Beauty", "Hair"]
    assert items["P2"]["price"] is None
    assert items["P3"]["price"] == 7.5
    u1 = result.interactions.join(result.users, on="user_idx").filter(pl.col("user_id") == "U1")
    assert u1.get_column("timestamp").to_list() == [1_588_687_728, 1_588_687_729, 1_588_687_730]
    assert result.report["steps"][-1]["users_dropped"] == 1  # U2 has one interaction


def test_mmrec_inter_keeps_its_split(tmp_path: Path) -> None:
    inter = write_lines(
        tmp_path / "baby.inter",
        [
            "userID\titemID\trating\ttimestamp\tx_label",
            "0\t10\t5\t100\t0",
            "0\t11\t4\t200\t1",
            "0\t12\t3\t300\t2",
            "1\t11\t4",
            "1\t12\t5\t300\t7",
            "1\t10\tx\t100\t0",
            "1\t12\t4\t400\t2",
            "1\t11\t4\t350\t1",
        ],
    )
    text = write_lines(
        tmp_path / "baby.item",
        [
            "itemID:token\ttitle:token_seq\tcategories:token_seq",
            "10\tPen\tOffice, Pens",
            "11\tPaper\tOffice",
            "12\tInk",
        ],
    )
    result = ingest("mmrec", inter, text)
    assert quarantined(result) == [
        ("baby.inter", 5, "dropped", "expected 5 tab-separated fields, got 3"),
        ("baby.inter", 6, "dropped", "x_label 7 is not 0 (train), 1 (valid) or 2 (test)"),
        ("baby.inter", 7, "field_nulled", "unparsable rating 'x'; record kept with rating null"),
        ("baby.item", 4, "dropped", "expected 3 tab-separated fields, got 2"),
    ]
    assert result.report["split_source"] == "source (x_label)"
    assert splits(result) == {
        ("0", "10"): "train",
        ("0", "11"): "valid",
        ("0", "12"): "test",
        ("1", "10"): "train",
        ("1", "11"): "valid",
        ("1", "12"): "test",
    }
    items = {r["item_id"]: r for r in result.items.iter_rows(named=True)}
    assert items["10"]["categories"] == ["Office", "Pens"]
    assert items["12"]["title"] is None
    assert result.report["items_without_metadata"] == 1


def test_mmrec_without_item_text(tmp_path: Path) -> None:
    inter = write_lines(tmp_path / "x.inter", ["userID\titemID", "0\t1", "0\t2", "0\t3"])
    result = ingest("mmrec", inter, None)
    assert result.items.get_column("title").null_count() == 3
    assert result.report["split_source"].startswith("rule")


def test_index_json(tmp_path: Path) -> None:
    inter = tmp_path / "Tiny.inter.json"
    inter.write_text(
        json.dumps({"0": [0, 1, 2], "1": [2, 1, 0, 3], "2": "oops", "3": [0, "x", 1, 2]})
    )
    items = tmp_path / "Tiny.item.json"
    items.write_text(
        json.dumps(
            {
                "0": {
                    "title": "Pen",
                    "description": "",
                    "brand": "Bic",
                    "categories": "Office Products, Writing, Pens",
                },
                "1": {
                    "title": "Paper",
                    "description": "A4",
                    "brand": "",
                    "categories": "Office Products",
                },
                "2": "not an object",
                "3": {"title": 5, "description": "d", "brand": "b", "categories": "C"},
            }
        )
    )
    result = ingest("index_json", str(inter), str(items))
    assert quarantined(result) == [
        ("Tiny.inter.json", None, "dropped", "user '2': expected a list of item indices, got str"),
        (
            "Tiny.inter.json",
            None,
            "dropped",
            "user '3', position 1: item index 'x' is not an integer",
        ),
        ("Tiny.item.json", None, "dropped", "expected an object, got str"),
    ]
    assert result.report["time_order"] == "source order (no timestamps)"
    assert splits(result) == {
        ("0", "0"): "train",
        ("0", "1"): "valid",
        ("0", "2"): "test",
        ("1", "2"): "train",
        ("1", "1"): "train",
        ("1", "0"): "valid",
        ("1", "3"): "test",
        ("3", "0"): "train",
        ("3", "1"): "valid",
        ("3", "2"): "test",
    }
    rows = {r["item_id"]: r for r in result.items.iter_rows(named=True)}
    assert rows["0"]["categories"] == ["Office Products", "Writing", "Pens"]
    assert rows["0"]["description"] is None
    assert rows["1"]["brand"] is None
    assert rows["2"]["title"] is None
    assert rows["3"]["title"] == "5"
    assert result.items.get_column("item_idx").to_list() == [0, 1, 2, 3]


def test_unreadable_files_are_clear_errors(tmp_path: Path) -> None:
    good_meta = write_lines(tmp_path / "meta.json", ["{'asin': 'I1'}"])
    binary = tmp_path / "reviews.bin"
    binary.write_bytes(bytes(range(256)) * 10)
    with pytest.raises(
        InputFormatError,
        match=rf"{binary}: no line could be read as Amazon review JSON lines .*check dataset",
    ):
        ingest("amazon2014", str(binary), good_meta)

    truncated = tmp_path / "cut.json.gz"
    whole = gzip.compress(
        "".join(review(f"U{i}", f"I{i * 7919 % 1000}", 5, i) + "\n" for i in range(2000)).encode()
    )
    truncated.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(
        InputFormatError, match=rf"{truncated}: the gzip stream ends early: the file is truncated"
    ):
        ingest("amazon2014", str(truncated), good_meta)

    with pytest.raises(InputFormatError, match=rf"{tmp_path / 'nope.json'}: no such file"):
        ingest("amazon2014", str(tmp_path / "nope.json"), good_meta)

    doc = tmp_path / "bad.inter.json"
    doc.write_text('{"0": [1, 2,\n')
    with pytest.raises(InputFormatError, match=rf"{doc}: not a valid JSON document \(line 2"):
        ingest("index_json", str(doc), str(doc))

    tsv = write_lines(tmp_path / "x.inter", ["user\titem", "0\t1"])
    with pytest.raises(
        InputFormatError, match=r"x.inter: header line has no column 'userID', 'itemID'"
    ):
        ingest("mmrec", tsv, None)


def test_a_line_that_is_not_utf8_is_quarantined(tmp_path: Path) -> None:
    good = [review("U1", f"I{i}", 5, i) for i in range(3)]
    path = tmp_path / "reviews.json"
    path.write_bytes(
        ("\n".join(good[:2]) + "\n").encode() + b'{"reviewerID": "\xff\xfe"}\n' + good[2].encode()
    )
    meta = write_lines(tmp_path / "meta.json", [f"{{'asin': 'I{i}'}}" for i in range(3)])
    result = ingest("amazon2014", str(path), meta)
    rows = quarantined(result)
    assert [(f, line, action) for f, line, action, _ in rows] == [("reviews.json", 3, "dropped")]
    assert rows[0][3].startswith("not UTF-8 text")
    assert result.interactions.height == 3
    assert result.report["files"][0] | {"path": ""} == {
        "path": "",
        "lines": 4,
        "blank": 0,
        "records": 3,
        "dropped": 1,
    }


def test_image_paths_are_kept_relative_to_the_metadata_folder() -> None:
    from neggen_core.ingest.formats import _resolve_images

    items = pl.DataFrame(
        {"image_uri": ["img/a.png", "/data/shop/img/b.png", "/elsewhere/c.png", "s3://x/d", None]}
    )
    resolved = _resolve_images(items, "/data/shop/meta.json.gz")["image_uri"].to_list()
    assert resolved == ["img/a.png", "img/b.png", "/elsewhere/c.png", "s3://x/d", None]
