"""A DuckDB catalog of one config's artifacts, for tools that read the outputs directly.

`write_catalog` writes under `<artifacts.root>/<dataset>/`:

- `catalog.duckdb`: one view per table of the versions the config resolves to, named
  `<stage>_<table>` (`evaluate_metrics`), reading exactly the Parquet part files its manifest
  lists, plus a `version` column; fixed-width vector columns are `FLOAT[n]` arrays, which
  `array_cosine_similarity` takes as they are. Its `lineage` table has one row per built
  version of every stage, the config's or not, in stage order, oldest first: `stage`,
  `version`, `upstream` (a STRUCT with one VARCHAR field per stage, NULL where the stage does
  not read it, so `upstream.train` is the train version an evaluate read), `config` (the
  manifest's config, JSON text), `created_at` (TIMESTAMP, UTC), `path` (the artifact folder),
  `current` (whether it is the version the config resolves to).
- `catalog-lineage.parquet`: the lineage rows.
- `catalog.sql`: the same views as `CREATE OR REPLACE VIEW` statements for any DuckDB
  (`.read catalog.sql`), `lineage` a view over `catalog-lineage.parquet`.

Only for a local artifact root: DuckDB cannot read `memory://`, and an object store would need
its credentials set up in DuckDB. Every path is absolute; each file is published atomically.
"""

from __future__ import annotations

import json
import os
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from neggen_core.artifacts.publish import write_file
from neggen_core.artifacts.store import ArtifactStore, Manifest
from neggen_core.config import NeggenConfig
from neggen_core.errors import ConfigError
from neggen_core.pipeline.run import check_intact
from neggen_core.pipeline.spec import StageSpec
from neggen_core.pipeline.stages import STAGE_ORDER, open_store, plan_versions
from neggen_core.redaction import redact

DATABASE = "catalog.duckdb"
SQL = "catalog.sql"
LINEAGE = "catalog-lineage.parquet"
# readable by DuckDB 1.0 and later, not only by the version that wrote it
STORAGE_VERSION = "v1.0.0"
ARRAY_TYPES = {pa.float32(): "FLOAT", pa.float64(): "DOUBLE"}


@dataclass(frozen=True)
class Catalog:
    """The files written (absolute paths) and the views `catalog.duckdb` holds."""

    database: str
    sql: str
    lineage: str
    views: tuple[str, ...]


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _name(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _column(field: pa.Field) -> str:
    """A column of a view: a fixed-width float list cast to a DuckDB array."""
    type_ = field.type
    if pa.types.is_fixed_size_list(type_) and type_.value_type in ARRAY_TYPES:
        array = f"{ARRAY_TYPES[type_.value_type]}[{type_.list_size}]"
        return f"CAST({_name(field.name)} AS {array}) AS {_name(field.name)}"
    return _name(field.name)


def _view(name: str, version: str, files: list[str]) -> str:
    """The statement creating one table's view over its part files."""
    schema = pq.read_schema(files[0])  # the Arrow schema stored in the file: vector widths
    columns = [_column(field) for field in schema]
    paths = "".join(f"\n    {_quote(path)}," for path in files)
    return (
        f"CREATE OR REPLACE VIEW {_name(name)} AS\n"
        f"  SELECT {', '.join(columns)}, {_quote(version)} AS version\n"
        f"  FROM read_parquet([{paths}\n  ], hive_partitioning = false);"
    )


def _lineage(store: ArtifactStore, stages: Sequence[str], current: dict[str, str]) -> pa.Table:
    """One row per built version of each stage, oldest first within a stage."""
    manifests: list[Manifest] = [
        store.manifest(stage, version) for stage in stages for version in store.versions(stage)
    ]
    keys = [*stages, *sorted({k for m in manifests for k in m.upstream} - set(stages))]
    upstream = pa.struct([pa.field(key, pa.string()) for key in keys])
    schema = pa.schema(
        [
            pa.field("stage", pa.string(), nullable=False),
            pa.field("version", pa.string(), nullable=False),
            pa.field("upstream", upstream, nullable=False),
            pa.field("config", pa.string(), nullable=False),
            pa.field("created_at", pa.timestamp("us"), nullable=False),
            pa.field("path", pa.string(), nullable=False),
            pa.field("current", pa.bool_(), nullable=False),
        ]
    )
    rows: list[dict[str, Any]] = [
        {
            "stage": m.stage,
            "version": m.version,
            "upstream": {key: m.upstream.get(key) for key in keys},
            "config": json.dumps(m.config, sort_keys=True),
            "created_at": datetime.fromisoformat(m.created_at).astimezone(UTC).replace(tzinfo=None),
            "path": os.path.abspath(store.path(m.stage, m.version)),
            "current": current.get(m.stage) == m.version,
        }
        for m in manifests
    ]
    return pa.Table.from_pylist(rows, schema=schema)


def _database(path: str, views: Sequence[str], lineage: str) -> None:
    """A DuckDB file holding the views and the lineage as a table."""
    with duckdb.connect(path, config={"storage_compatibility_version": STORAGE_VERSION}) as con:
        con.execute(f"CREATE TABLE lineage AS SELECT * FROM read_parquet({_quote(lineage)})")
        for statement in views:
            con.execute(statement)


def write_catalog(config: NeggenConfig, extra: Sequence[StageSpec] = ()) -> Catalog:
    """Write `catalog.duckdb`, `catalog.sql` and `catalog-lineage.parquet` for the artifacts
    this config resolves to (each `extra` stage, the comparison, under its own name). A stage
    not built for this config has no views; a damaged artifact is an `ArtifactError`."""
    store = open_store(config)
    if not isinstance(store.fs, LocalFileSystem):
        raise ConfigError(
            f"artifacts.root {redact(config.artifacts.root)}: the catalog needs a local "
            "artifact root (DuckDB reads the part files by path); read an object store's "
            "tables from the URIs `neggen status --json` lists"
        )
    expected = plan_versions(config, extra)
    stages = [*STAGE_ORDER, *(spec.name for spec in extra)]
    current = {stage: expected[stage] for stage in stages if store.exists(stage, expected[stage])}
    views: dict[str, str] = {}
    for stage, version in current.items():
        check_intact(store, stage, version)
        base = os.path.abspath(store.path(stage, version))
        for table, entry in store.manifest(stage, version).tables.items():
            files = [posixpath.join(base, f.path) for f in entry.files]
            views[f"{stage}_{table}"] = _view(f"{stage}_{table}", version, files)

    folder = os.path.abspath(store.shared_path())
    store.fs.makedirs(folder, exist_ok=True)
    lineage_path = posixpath.join(folder, LINEAGE)
    lineage = _lineage(store, stages, current)
    write_file(store.fs, lineage_path, lambda tmp: pq.write_table(lineage, tmp))

    sql_path = posixpath.join(folder, SQL)
    header = (
        f"-- NegGen catalog of dataset {config.dataset.name!r}: the artifacts of one config "
        f"as views.\n-- Written by `neggen catalog`; in DuckDB: .read {sql_path}\n"
    )
    lineage_view = (
        f"CREATE OR REPLACE VIEW lineage AS SELECT * FROM read_parquet({_quote(lineage_path)});"
    )
    text = "\n".join([header, lineage_view, *views.values()]) + "\n"
    write_file(store.fs, sql_path, text.encode())

    database_path = posixpath.join(folder, DATABASE)
    write_file(
        store.fs, database_path, lambda tmp: _database(tmp, list(views.values()), lineage_path)
    )
    return Catalog(database_path, sql_path, lineage_path, tuple(views))
