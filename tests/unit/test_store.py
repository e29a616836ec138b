from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from neggen_core.artifacts.store import ArtifactStore, compute_version
from neggen_core.errors import ArtifactError, SchemaError

SCHEMA = pa.schema(
    [
        pa.field("item_idx", pa.int32(), nullable=False),
        pa.field("tags", pa.list_(pa.string())),
    ]
)
TABLES = {"things": SCHEMA}


def _frame(n: int, offset: int = 0) -> pl.DataFrame:
    return pl.DataFrame(
        {"item_idx": list(range(offset, offset + n)), "tags": [["a", str(i)] for i in range(n)]},
        schema={"item_idx": pl.Int32, "tags": pl.List(pl.String)},
    )


def _writer(store: ArtifactStore, version: str = "v1", resume: bool = False):
    return store.writer(
        "stage",
        version,
        schemas=TABLES,
        schema_version=1,
        config={"k": 1},
        upstream={},
        resume=resume,
    )


@pytest.fixture(params=["local", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ArtifactStore]:
    """The same store on a local folder and on fsspec's in-memory filesystem."""
    if request.param == "local":
        yield ArtifactStore(str(tmp_path / "root"), "ds")
        return
    root = f"memory://neggen-test-{uuid.uuid4().hex}"
    yield ArtifactStore(root, "ds")
    fsspec.filesystem("memory").rm(root.removeprefix("memory://"), recursive=True)


def test_version_depends_on_every_input() -> None:
    base = compute_version("ingest", 1, {"k_core": 5}, {})
    assert base == compute_version("ingest", 1, {"k_core": 5}, {})
    assert (
        len(
            {
                base,
                compute_version("ingest", 2, {"k_core": 5}, {}),
                compute_version("ingest", 1, {"k_core": 10}, {}),
                compute_version("ingest", 1, {"k_core": 5}, {"up": "abc"}),
                compute_version("other", 1, {"k_core": 5}, {}),
            }
        )
        == 5
    )


def test_write_commit_read_round_trip(store: ArtifactStore) -> None:
    writer = _writer(store)
    writer.write_table("things", _frame(3), part=0)
    writer.write_table("things", _frame(2, offset=3), part=1)
    writer.write_json("report.json", {"ok": True})
    ref = writer.commit({"note": "x"})
    assert store.exists("stage", "v1")
    manifest = store.manifest("stage", "v1")
    assert manifest.tables["things"].rows == 5
    assert [f.path for f in manifest.tables["things"].files] == [
        "things/part-00000.parquet",
        "things/part-00001.parquet",
    ]
    assert [f.path for f in manifest.files] == ["report.json"]
    assert manifest.info == {"note": "x"}
    table = store.read_table(ref, "things", SCHEMA)
    assert table.schema == SCHEMA
    assert table.column("item_idx").to_pylist() == [0, 1, 2, 3, 4]
    assert store.read_json(ref, "report.json") == {"ok": True}
    assert store.verify("stage", "v1") == []
    assert store.versions("stage") == ["v1"]


def test_schema_is_checked_on_write(store: ArtifactStore) -> None:
    writer = _writer(store)
    wrong_type = pl.DataFrame({"item_idx": ["a"], "tags": [["x"]]})
    with pytest.raises(SchemaError, match=r"column 'item_idx' has type .*string.*expected int32"):
        writer.write_table("things", wrong_type)
    with pytest.raises(SchemaError, match=r"missing: tags \(list<item: string>\)"):
        writer.write_table("things", pl.DataFrame({"item_idx": [1]}, schema={"item_idx": pl.Int32}))
    nulls = pl.DataFrame(
        {"item_idx": [None], "tags": [None]},
        schema={"item_idx": pl.Int32, "tags": pl.List(pl.String)},
    )
    with pytest.raises(SchemaError, match="'item_idx' has 1 nulls"):
        writer.write_table("things", nulls)
    with pytest.raises(ArtifactError, match="declares no table 'other'"):
        writer.write_table("other", _frame(1))


def test_schema_is_checked_on_read(store: ArtifactStore) -> None:
    writer = _writer(store)
    writer.write_table("things", _frame(2))
    ref = writer.commit()
    part = f"{store.path('stage', 'v1')}/things/part-00000.parquet"
    pq.write_table(
        pa.table({"item_idx": pa.array(["x"]), "tags": pa.array([["y"]])}),
        part,
        filesystem=store.fs,
    )
    with pytest.raises(
        SchemaError, match=r"part-00000\.parquet: column 'item_idx' has type string"
    ):
        store.read_table(ref, "things", SCHEMA)
    assert store.verify("stage", "v1")  # size differs from the manifest


def test_crash_mid_write_leaves_no_artifact_and_rerun_succeeds(store: ArtifactStore) -> None:
    class Crash(Exception):
        pass

    with pytest.raises(Crash):
        writer = _writer(store)
        writer.write_table("things", _frame(2), part=0)
        raise Crash
    assert not store.exists("stage", "v1")
    assert store.versions("stage") == []
    with pytest.raises(ArtifactError, match="no such artifact"):
        store.manifest("stage", "v1")

    writer = _writer(store)
    assert not writer.has_part("things", 0)  # a non-resumable writer starts clean
    writer.write_table("things", _frame(4))
    writer.commit()
    assert store.manifest("stage", "v1").tables["things"].rows == 4


def test_resumable_writer_keeps_finished_parts(store: ArtifactStore) -> None:
    first = _writer(store, resume=True)
    first.write_table("things", _frame(2), part=0)
    # the process dies here; a new attempt resumes
    second = _writer(store, resume=True)
    assert second.has_part("things", 0)
    assert not second.has_part("things", 1)
    second.write_table("things", _frame(2, offset=2), part=1)
    ref = second.commit()
    assert store.read_table(ref, "things", SCHEMA).column("item_idx").to_pylist() == [0, 1, 2, 3]


def test_folder_without_manifest_is_not_an_artifact(store: ArtifactStore) -> None:
    store.fs.makedirs(f"{store.path('stage', 'v9')}/things", exist_ok=True)
    assert not store.exists("stage", "v9")
    assert store.versions("stage") == []


def test_table_without_parts_cannot_commit(store: ArtifactStore) -> None:
    with pytest.raises(ArtifactError, match="table 'things' was never written"):
        _writer(store).commit()


def test_existing_artifact_is_never_overwritten(store: ArtifactStore) -> None:
    writer = _writer(store)
    writer.write_table("things", _frame(1))
    writer.commit()
    with pytest.raises(ArtifactError, match="already exists"):
        _writer(store)
