"""`write_catalog`: DuckDB views over the artifacts of one config, the lineage of every version,
the same views as plain SQL; and the table URIs `status` lists."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from neggen_core.artifacts.schemas import METRICS, vector_type
from neggen_core.artifacts.store import ArtifactRef, ArtifactStore
from neggen_core.config import NeggenConfig, load_config
from neggen_core.errors import ConfigError
from neggen_core.pipeline.catalog import write_catalog
from neggen_core.pipeline.run import built_ref, run_stage
from neggen_core.pipeline.spec import Build, StageSpec
from neggen_core.pipeline.stages import STAGE_ORDER, open_store, plan_versions
from neggen_core.pipeline.status import status
from tests.support.helpers import DEMO_SETTINGS

PROBE_SCHEMA = pa.schema([pa.field("item_idx", pa.int32()), pa.field("vector", vector_type(3))])


def _build_probe(ctx: Build) -> dict[str, Any]:
    vectors = pa.array([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0]], vector_type(3))
    ctx.writer.write_table(
        "vectors", pa.table({"item_idx": pa.array([0, 1], pa.int32()), "vector": vectors})
    )
    return {}


# a stage beyond the pipeline's, as the comparison is: its vectors are 3 wide
PROBE = StageSpec(
    "probe", ("evaluate",), 1, {"vectors": PROBE_SCHEMA}, lambda c: {}, build=_build_probe
)


@dataclass(frozen=True)
class Built:
    first: NeggenConfig  # train.epochs=3, with the probe built
    second: NeggenConfig  # train.epochs=2: new train and evaluate versions beside the first's


def _config(root: str, *settings: str) -> NeggenConfig:
    return load_config(None, [f"artifacts.root={root}", *DEMO_SETTINGS, *settings])


@pytest.fixture(scope="module")
def built(
    demo_built: tuple[str, dict[str, object]], tmp_path_factory: pytest.TempPathFactory
) -> Built:
    """The demo copied, then train and evaluate built on it under two configs."""
    root = str(tmp_path_factory.mktemp("catalog") / "artifacts")
    shutil.copytree(demo_built[0], root, ignore=shutil.ignore_patterns(".locks"))
    first, second = _config(root), _config(root, "train.epochs=2")
    for config in (first, second):
        refs: dict[str, ArtifactRef] = {s: built_ref(config, s) for s in STAGE_ORDER[:4]}
        for stage in ("train", "evaluate"):
            refs[stage] = run_stage(config, stage, refs).ref
        if config is first:
            run_stage(config, PROBE, refs)
    return Built(first, second)


def _rows(store: ArtifactStore, stage: str, version: str) -> dict[str, int]:
    return {name: t.rows for name, t in store.manifest(stage, version).tables.items()}


def _epochs_query(con: duckdb.DuckDBPyConnection) -> list[tuple[Any, ...]]:
    """Each evaluate metric's version with the epochs of the train config it rests on."""
    return con.sql(
        """
        SELECT DISTINCT m.version, json_extract(t.config, '$.train.epochs')::INTEGER
        FROM evaluate_metrics m
        JOIN lineage e ON e.stage = 'evaluate' AND e.version = m.version
        JOIN lineage t ON t.stage = 'train' AND t.version = e.upstream.train
        """
    ).fetchall()


def test_views_read_the_config_s_artifacts(built: Built) -> None:
    config = built.first
    catalog = write_catalog(config, [PROBE])
    store, versions = open_store(config), plan_versions(config, [PROBE])
    dataset = Path(config.artifacts.root, config.dataset.name).resolve()
    assert (catalog.database, catalog.sql, catalog.lineage) == (
        str(dataset / "catalog.duckdb"),
        str(dataset / "catalog.sql"),
        str(dataset / "catalog-lineage.parquet"),
    )
    expected = {
        f"{stage}_{table}": (versions[stage], rows)
        for stage in (*STAGE_ORDER, "probe")
        for table, rows in _rows(store, stage, versions[stage]).items()
    }
    assert set(catalog.views) == set(expected)
    assert {"ingest_items", "embeddings_item_embeddings", "evaluate_metrics"} <= set(expected)
    with duckdb.connect(catalog.database, read_only=True) as con:
        for view, (version, rows) in expected.items():
            found = con.sql(f"SELECT version, count(*) FROM {view} GROUP BY version").fetchall()
            assert found == ([(version, rows)] if rows else []), view
        assert con.sql("SELECT count(*) FROM evaluate_metrics").fetchall() == [(24,)]
        assert con.sql("SELECT count(*) FROM train_training_log").fetchall() == [(3,)]


def test_vectors_are_fixed_size_arrays(built: Built) -> None:
    catalog = write_catalog(built.first, [PROBE])
    with duckdb.connect(catalog.database, read_only=True) as con:

        def types(view: str) -> dict[str, str]:
            return {row[0]: row[1] for row in con.sql(f"DESCRIBE {view}").fetchall()}

        items = types("embeddings_item_embeddings")
        assert {c: items[c] for c in ("text_vector", "visual_vector", "vector")} == {
            "text_vector": "FLOAT[384]",
            "visual_vector": "FLOAT[384]",
            "vector": "FLOAT[384]",
        }
        assert items["image_features"].startswith("FLOAT[") and items["version"] == "VARCHAR"
        assert types("embeddings_text_vectors")["vector"] == "FLOAT[384]"
        negatives = types("embeddings_negative_embeddings")
        assert negatives["vector"] == negatives["text_vector"] == "FLOAT[384]"
        assert types("probe_vectors")["vector"] == "FLOAT[3]"
        assert types("ingest_items")["categories"] == "VARCHAR[]"  # lists stay lists

        [(similarity,)] = con.sql(
            "SELECT array_cosine_similarity(a.vector, b.vector) FROM probe_vectors a, "
            "probe_vectors b WHERE a.item_idx = 0 AND b.item_idx = 1"
        ).fetchall()
        assert similarity == pytest.approx(0.6)
        [(first, second, cosine)] = con.sql(
            """
            SELECT a.vector, b.vector, array_cosine_similarity(a.vector, b.vector)
            FROM embeddings_item_embeddings a, embeddings_item_embeddings b
            WHERE a.item_idx = 0 AND b.item_idx = 1
            """
        ).fetchall()
    a, b = np.asarray(first), np.asarray(second)
    assert a.shape == (384,)
    assert cosine == pytest.approx(a @ b / np.linalg.norm(a) / np.linalg.norm(b), abs=1e-5)


def test_lineage_joins_metrics_to_the_train_config(built: Built) -> None:
    versions = {n: plan_versions(c) for n, c in (("first", built.first), ("second", built.second))}
    assert versions["first"]["train"] != versions["second"]["train"]
    store = open_store(built.first)

    catalog = write_catalog(built.first, [PROBE])
    with duckdb.connect(catalog.database, read_only=True) as con:
        assert _epochs_query(con) == [(versions["first"]["evaluate"], 3)]
        lineage = con.sql(
            "SELECT stage, version, current, upstream.train, created_at, path FROM lineage"
        ).fetchall()
        types = dict(
            con.sql(
                "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'lineage'"
            ).fetchall()
        )
    rows = {(stage, version): rest for stage, version, *rest in lineage}
    on_disk = {(s, v) for s in (*STAGE_ORDER, "probe") for v in store.versions(s)}
    assert set(rows) == on_disk and len(rows) == len(lineage)
    for stage in ("train", "evaluate"):
        assert rows[stage, versions["first"][stage]][0] is True
        assert rows[stage, versions["second"][stage]][0] is False
    assert rows["evaluate", versions["second"]["evaluate"]][1] == versions["second"]["train"]
    assert rows["ingest", versions["first"]["ingest"]][1] is None
    path = rows["train", versions["first"]["train"]][3]
    assert Path(path).is_absolute() and Path(path, "manifest.json").is_file()
    assert types["created_at"] == "TIMESTAMP" and types["config"] == "VARCHAR"
    assert types["upstream"].startswith("STRUCT(ingest VARCHAR, attributes VARCHAR")

    # the second config's catalog: its own versions, the first's now not current
    catalog = write_catalog(built.second, [PROBE])
    with duckdb.connect(catalog.database, read_only=True) as con:
        assert _epochs_query(con) == [(versions["second"]["evaluate"], 2)]
        assert con.sql("SELECT count(*) FROM train_training_log").fetchall() == [(2,)]
        current = con.sql(
            "SELECT stage, version FROM lineage WHERE current AND stage IN ('train', 'evaluate')"
        ).fetchall()
        assert sorted(current) == sorted(
            [(s, versions["second"][s]) for s in ("train", "evaluate")]
        )
        assert "probe_vectors" not in catalog.views  # the probe was built on the first only
        assert con.sql("SELECT current FROM lineage WHERE stage = 'probe'").fetchall() == [(False,)]


def test_the_first_config_s_views_read_only_its_version(built: Built) -> None:
    config = built.first
    version = plan_versions(config)["evaluate"]
    store = open_store(config)
    expected = store.read_frame(store.ref("evaluate", version), "metrics", METRICS)
    catalog = write_catalog(config)
    with duckdb.connect(catalog.database, read_only=True) as con:
        found = con.sql("SELECT * FROM evaluate_metrics").pl()
    assert found["version"].unique().to_list() == [version]
    key = ["split", "metric", "k"]
    assert found.drop("version").sort(key).equals(expected.sort(key))


def test_the_sql_file_gives_the_same_views(built: Built) -> None:
    catalog = write_catalog(built.first, [PROBE])
    with duckdb.connect() as fresh, duckdb.connect(catalog.database, read_only=True) as con:
        fresh.execute(Path(catalog.sql).read_text(encoding="utf-8"))
        for view in (*catalog.views, "lineage"):
            query = f"SELECT * FROM {view} ORDER BY ALL"
            assert (
                fresh.sql(f"DESCRIBE {view}").fetchall() == con.sql(f"DESCRIBE {view}").fetchall()
            ), view
            assert fresh.sql(query).fetchall() == con.sql(query).fetchall(), view
        names = {
            r[0]
            for r in fresh.sql("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()
        }
        assert names == {*catalog.views, "lineage"}
        assert _epochs_query(fresh) == _epochs_query(con)


def test_a_catalog_needs_a_local_root() -> None:
    with pytest.raises(ConfigError, match="the catalog needs a local artifact root"):
        write_catalog(load_config(None, ["artifacts.root=memory://catalog"]))


def test_status_lists_every_table_s_uri(built: Built, root: str) -> None:
    config = built.first
    report = status(config, [PROBE])
    store = open_store(config)
    for stage in STAGE_ORDER:
        entry = report["stages"][stage]
        manifest = store.manifest(stage, entry["version"])
        assert entry["tables"] == {t: f"{entry['path']}/{t}" for t in manifest.tables}
        for table, uri in entry["tables"].items():
            assert pl.read_parquet(uri).height == manifest.tables[table].rows, uri
    assert set(report["stages"]["evaluate"]["tables"]) == {
        "metrics",
        "user_metrics",
        "recommendations",
    }
    assert list(report["probe"]["tables"]) == ["vectors"]
    assert json.loads(json.dumps(report)) == report

    nothing = status(_config(root))
    assert all(entry["tables"] == {} for entry in nothing["stages"].values())
