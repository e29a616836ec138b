"""Versioned, atomic, resumable artifact store on any fsspec filesystem.

Layout: `<root>/<dataset>/<stage>/<version>/` holding one folder per table of numbered Parquet
part files, optional JSON side files (reports), and `manifest.json`, written last. A folder
without a manifest is not an artifact.

Writes go to `<root>/<dataset>/<stage>/.staging-<version>/`; each part file is written to a
temporary name and renamed, so a part that exists is complete. `commit()` moves the staging
folder into place and then writes the manifest. A crash leaves at most a staging folder, which
is never read as an artifact: a non-resumable writer clears it, a resumable one keeps its parts.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import posixpath
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

import fsspec
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem
from pydantic import BaseModel, ConfigDict

from neggen_core import __version__
from neggen_core.artifacts.publish import (
    TEMPORARY_SUFFIX,
    is_published,
    is_temporary,
    publish_folder,
    write_file,
)
from neggen_core.artifacts.schemas import conform, schema_fingerprint
from neggen_core.errors import ArtifactError

MANIFEST = "manifest.json"
VERSION_LENGTH = 16


def compute_version(
    stage: str,
    schema_version: int,
    config: Mapping[str, Any],
    upstream: Mapping[str, str],
) -> str:
    """Version = hash of (stage, schema version, the stage's config section, upstream versions)."""
    payload = json.dumps(
        {
            "stage": stage,
            "schema_version": schema_version,
            "config": config,
            "upstream": dict(upstream),
        },
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:VERSION_LENGTH]


class FileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str
    bytes: int
    sha256: str


class TableEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rows: int
    schema_fingerprint: str
    files: list[FileEntry]


class Manifest(BaseModel):
    """What `manifest.json` records about one artifact."""

    model_config = ConfigDict(extra="forbid")
    dataset: str
    stage: str
    version: str
    schema_version: int
    upstream: dict[str, str]
    config: dict[str, Any]
    code_version: str
    created_at: str
    seconds: float
    tables: dict[str, TableEntry]
    files: list[FileEntry]
    info: dict[str, Any]


@dataclass(frozen=True)
class ArtifactRef:
    """A small, serialisable pointer to one artifact: what tasks pass to each other."""

    root: str
    dataset: str
    stage: str
    version: str

    @property
    def uri(self) -> str:
        return posixpath.join(self.root.rstrip("/"), self.dataset, self.stage, self.version)


def uri_of(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """A path others can open: plain for the local filesystem, with its protocol otherwise."""
    if isinstance(fs, LocalFileSystem):
        return path
    return str(fs.unstrip_protocol(path))


LOCKS = ".locks"  # the artifacts' lock files, not artifacts: rewritten by every build
_threads = threading.local()
log = logging.getLogger(__name__)


def _held_locks() -> dict[str, int]:
    """This thread's artifact locks and how deeply each is held."""
    if not hasattr(_threads, "locks"):
        _threads.locks = {}
    held: dict[str, int] = _threads.locks
    return held


def _acquire(handle: IO[str], path: str, purpose: str, timeout_s: float) -> None:
    """flock `handle`, polling until `timeout_s`; then write who holds it."""
    deadline = time.monotonic() + timeout_s
    said = False
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            if time.monotonic() >= deadline:
                raise ArtifactError(
                    f"{path}: the artifact is in use by {holder}; waited {timeout_s:.0f} s. Run "
                    "again when it is done (or stop it; artifacts.lock_timeout_s sets the wait)"
                ) from None
            if not said:
                log.warning("waiting for %s, held by %s", path, holder)
                said = True
            time.sleep(0.2)
    handle.seek(0)
    handle.truncate(0)
    since = datetime.now(UTC).isoformat(timespec="seconds")
    handle.write(f"{purpose} (pid {os.getpid()} on {socket.gethostname()}, since {since})")
    handle.flush()


def _sha256(fs: fsspec.AbstractFileSystem, path: str) -> str:
    digest = hashlib.sha256()
    with fs.open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class ArtifactStore:
    """Artifacts of one dataset under one root (a local path or an fsspec URI)."""

    def __init__(self, root: str, dataset: str) -> None:
        self.root = root
        self.dataset = dataset
        self.fs, base = fsspec.core.url_to_fs(root)
        # pyarrow's own local IO is faster than going through fsspec's Python file objects
        self.arrow_fs = None if isinstance(self.fs, LocalFileSystem) else self.fs
        self.root_path = base.rstrip("/") or "/"
        self._base = posixpath.join(self.root_path, dataset)

    def _stage_dir(self, stage: str) -> str:
        return posixpath.join(self._base, stage)

    def shared_path(self, *parts: str) -> str:
        """A folder of this dataset shared by all versions of a stage (not an artifact: a
        cache, e.g. the text vectors every embeddings version can reuse)."""
        return posixpath.join(self._base, *parts)

    def path(self, stage: str, version: str) -> str:
        """The filesystem path (within `self.fs`) of an artifact folder."""
        return posixpath.join(self._stage_dir(stage), version)

    def ref(self, stage: str, version: str) -> ArtifactRef:
        return ArtifactRef(self.root, self.dataset, stage, version)

    def exists(self, stage: str, version: str) -> bool:
        return is_published(self.fs, self.path(stage, version), MANIFEST)

    def versions(self, stage: str) -> list[str]:
        """Complete versions of a stage, oldest first."""
        stage_dir = self._stage_dir(stage)
        if not self.fs.exists(stage_dir):
            return []
        found = []
        for entry in self.fs.ls(stage_dir, detail=False):
            name = posixpath.basename(entry.rstrip("/"))
            if not name.startswith(".") and self.exists(stage, name):
                found.append((self.manifest(stage, name).created_at, name))
        return [name for _, name in sorted(found)]

    def manifest(self, stage: str, version: str) -> Manifest:
        path = posixpath.join(self.path(stage, version), MANIFEST)
        try:
            with self.fs.open(path, "r") as handle:
                return Manifest.model_validate_json(handle.read())
        except FileNotFoundError as exc:
            raise ArtifactError(
                f"{path}: no such artifact ({stage} version {version}); "
                f"run `neggen run --until {stage}` to build it"
            ) from exc

    def verify(self, stage: str, version: str, checksums: bool = True) -> list[str]:
        """Problems with an artifact's files (missing, wrong size, and with `checksums` a
        sha256 that is not the manifest's); empty when it is sound."""
        manifest = self.manifest(stage, version)
        base = self.path(stage, version)
        problems = []
        entries = [f for t in manifest.tables.values() for f in t.files] + manifest.files
        for entry in entries:
            path = posixpath.join(base, entry.path)
            if not self.fs.exists(path):
                problems.append(f"{uri_of(self.fs, path)}: missing")
            elif self.fs.size(path) != entry.bytes:
                problems.append(
                    f"{uri_of(self.fs, path)}: {self.fs.size(path)} bytes, the manifest says "
                    f"{entry.bytes}"
                )
            elif checksums and _sha256(self.fs, path) != entry.sha256:
                problems.append(f"{uri_of(self.fs, path)}: its sha256 is not the manifest's")
        return problems

    def remove(self, stage: str, version: str) -> None:
        """Delete an artifact: its manifest first (it stops being an artifact), then its files."""
        folder = self.path(stage, version)
        manifest = posixpath.join(folder, MANIFEST)
        if self.fs.exists(manifest):
            self.fs.rm(manifest)
        if self.fs.exists(folder):
            self.fs.rm(folder, recursive=True)

    @contextmanager
    def lock(self, stage: str, version: str, purpose: str, timeout_s: float) -> Iterator[None]:
        """Hold the lock of one artifact (`<root>/<dataset>/.locks/<stage>-<version>`) while
        building or removing it: a second holder waits, up to `timeout_s`, then fails naming the
        holder. Artifacts of other versions build at the same time (a comparison trains its runs
        in parallel). Re-entrant within a thread. Only a local disk can be locked: on an object
        store this does nothing, and one builder per artifact is the user's to ensure."""
        if not isinstance(self.fs, LocalFileSystem):
            yield
            return
        folder = posixpath.join(self._base, LOCKS)
        path = posixpath.join(folder, f"{stage}-{version}")
        held = _held_locks()
        if held.get(path, 0):
            held[path] += 1
            try:
                yield
            finally:
                held[path] -= 1
            return
        self.fs.makedirs(folder, exist_ok=True)
        with open(path, "a+", encoding="utf-8") as handle:
            _acquire(handle, path, purpose, timeout_s)
            held[path] = 1
            try:
                yield
            finally:
                held[path] = 0
                handle.truncate(0)
                fcntl.flock(handle, fcntl.LOCK_UN)

    def read_table(
        self, ref: ArtifactRef, table: str, schema: pa.Schema, columns: list[str] | None = None
    ) -> pa.Table:
        """Read one table of an artifact, checked against its schema of record."""
        manifest = self.manifest(ref.stage, ref.version)
        if table not in manifest.tables:
            raise ArtifactError(
                f"{ref.uri}: artifact has no table {table!r} (it has {', '.join(manifest.tables)})"
            )
        base = self.path(ref.stage, ref.version)
        pieces = []
        for entry in manifest.tables[table].files:
            path = posixpath.join(base, entry.path)
            piece = pq.read_table(path, filesystem=self.arrow_fs)
            piece = conform(
                piece, schema, f"{self.root}/{self.dataset}/{ref.stage}/{ref.version}/{entry.path}"
            )
            pieces.append(piece.select(columns) if columns else piece)
        if not pieces:
            return schema.empty_table().select(columns) if columns else schema.empty_table()
        return pa.concat_tables(pieces)

    def read_frame(
        self, ref: ArtifactRef, table: str, schema: pa.Schema, columns: list[str] | None = None
    ) -> pl.DataFrame:
        frame = pl.from_arrow(self.read_table(ref, table, schema, columns))
        assert isinstance(frame, pl.DataFrame)
        return frame

    def read_json(self, ref: ArtifactRef, name: str) -> Any:
        return json.loads(self.read_bytes(ref, name))

    def read_bytes(self, ref: ArtifactRef, name: str) -> bytes:
        """A side file of an artifact (a report, an index)."""
        path = posixpath.join(self.path(ref.stage, ref.version), name)
        try:
            with self.fs.open(path, "rb") as handle:
                return bytes(handle.read())
        except FileNotFoundError as exc:
            raise ArtifactError(
                f"{uri_of(self.fs, path)}: the artifact has no file {name!r}"
            ) from exc

    def writer(
        self,
        stage: str,
        version: str,
        *,
        schemas: Mapping[str, pa.Schema],
        schema_version: int,
        config: Mapping[str, Any],
        upstream: Mapping[str, str],
        resume: bool = False,
    ) -> ArtifactWriter:
        """A writer for a new artifact; `resume=True` keeps part files of an earlier attempt."""
        return ArtifactWriter(
            self, stage, version, schemas, schema_version, config, upstream, resume
        )


class ArtifactWriter:
    """Builds one artifact in a staging folder; `commit()` publishes it atomically."""

    def __init__(
        self,
        store: ArtifactStore,
        stage: str,
        version: str,
        schemas: Mapping[str, pa.Schema],
        schema_version: int,
        config: Mapping[str, Any],
        upstream: Mapping[str, str],
        resume: bool,
    ) -> None:
        self.store = store
        self.fs = store.fs
        self.stage = stage
        self.version = version
        self.schemas = dict(schemas)
        self.schema_version = schema_version
        self.config = dict(config)
        self.upstream = dict(upstream)
        self.staging = posixpath.join(store._stage_dir(stage), f".staging-{version}")
        self._started = time.perf_counter()
        if store.exists(stage, version):
            raise ArtifactError(f"{store.path(stage, version)}: artifact already exists")
        if not resume and self.fs.exists(self.staging):
            log.warning("cleared %s, left by an earlier attempt", uri_of(self.fs, self.staging))
            self.fs.rm(self.staging, recursive=True)
        self.fs.makedirs(self.staging, exist_ok=True)
        if resume:
            self._drop_broken_parts()

    def _drop_broken_parts(self) -> None:
        """An earlier attempt's part that does not read as Parquet (a damaged disk, a copied
        folder) is removed, and said: its batch is built again."""
        for path in self.fs.glob(posixpath.join(self.staging, "*", "part-*.parquet")):
            try:
                pq.read_metadata(path, filesystem=self.store.arrow_fs)
            except (OSError, pa.ArrowInvalid) as exc:
                log.warning("removed %s, a part that does not read (%s); rebuilding it", path, exc)
                self.fs.rm(path)

    def _part_path(self, table: str, part: int) -> str:
        return posixpath.join(self.staging, table, f"part-{part:05d}.parquet")

    def has_part(self, table: str, part: int) -> bool:
        return bool(self.fs.exists(self._part_path(table, part)))

    def write_table(self, table: str, data: pa.Table | pl.DataFrame, part: int = 0) -> None:
        """Write one part of a table, checked against its schema, atomically."""
        if table not in self.schemas:
            raise ArtifactError(
                f"stage {self.stage!r} declares no table {table!r} "
                f"(declared: {', '.join(self.schemas)})"
            )
        arrow = data.to_arrow() if isinstance(data, pl.DataFrame) else data
        arrow = conform(arrow, self.schemas[table], f"{self.stage}/{table} part {part}")
        final = self._part_path(table, part)
        self.fs.makedirs(posixpath.dirname(final), exist_ok=True)

        def parquet(tmp: str) -> None:
            pq.write_table(arrow, tmp, filesystem=self.store.arrow_fs, compression="zstd")

        write_file(self.fs, final, parquet)

    def parts(self, table: str) -> list[int]:
        """Numbers of the parts of `table` already written (by this or an earlier attempt)."""
        found = self.fs.glob(posixpath.join(self.staging, table, "part-*.parquet"))
        return sorted(int(posixpath.basename(p)[5:10]) for p in found)

    def read_part(self, table: str, part: int) -> pa.Table:
        """A part written earlier, checked against its schema."""
        path = self._part_path(table, part)
        piece = pq.read_table(path, filesystem=self.store.arrow_fs)
        return conform(piece, self.schemas[table], f"{self.stage}/{table} part {part}")

    def read_written(self, table: str) -> pl.DataFrame:
        """Every part of `table` written so far, in part order, as one frame."""
        pieces = [self.read_part(table, part) for part in self.parts(table)]
        frame = pl.from_arrow(
            pa.concat_tables(pieces) if pieces else self.schemas[table].empty_table()
        )
        assert isinstance(frame, pl.DataFrame)
        return frame

    def set_schema(self, table: str, schema: pa.Schema) -> None:
        """Fix a declared table's schema once it is known (a vector width known only when the
        encoder is loaded); before any part of it is written in this attempt."""
        if table not in self.schemas:
            raise ArtifactError(f"stage {self.stage!r} declares no table {table!r}")
        if schema.names != self.schemas[table].names:
            raise ArtifactError(
                f"{self.stage}/{table}: columns {schema.names} differ from the declared "
                f"{self.schemas[table].names}"
            )
        self.schemas[table] = schema

    def write_json(self, name: str, payload: Any) -> None:
        """Write a JSON side file (a report) into the artifact."""
        self.write_bytes(name, json.dumps(payload, indent=2, sort_keys=True, default=str).encode())

    def write_bytes(self, name: str, data: bytes) -> None:
        """Write a side file (a report, an index) into the artifact, atomically."""
        write_file(self.fs, posixpath.join(self.staging, name), data)

    def read_bytes(self, name: str) -> bytes | None:
        """A side file written earlier (by this or an earlier attempt), or None."""
        path = posixpath.join(self.staging, name)
        if not self.fs.exists(path):
            return None
        with self.fs.open(path, "rb") as handle:
            return bytes(handle.read())

    def remove(self, name: str) -> None:
        """Drop a side file that must not be published (a resume checkpoint)."""
        path = posixpath.join(self.staging, name)
        if self.fs.exists(path):
            self.fs.rm(path)

    def _entry(self, path: str) -> FileEntry:
        return FileEntry(
            path=posixpath.relpath(path, self.staging),
            bytes=self.fs.size(path),
            sha256=_sha256(self.fs, path),
        )

    def commit(self, info: Mapping[str, Any] | None = None) -> ArtifactRef:
        """Move the staging folder into place, then write the manifest: the artifact exists."""
        tables: dict[str, TableEntry] = {}
        for table, schema in self.schemas.items():
            folder = posixpath.join(self.staging, table)
            parts = sorted(self.fs.glob(posixpath.join(folder, "part-*.parquet")))
            if not parts:
                raise ArtifactError(f"{self.stage}: table {table!r} was never written")
            rows = sum(pq.read_metadata(p, filesystem=self.store.arrow_fs).num_rows for p in parts)
            tables[table] = TableEntry(
                rows=rows,
                schema_fingerprint=schema_fingerprint(schema),
                files=[self._entry(p) for p in parts],
            )
        side_files = [
            self._entry(entry["name"])
            for entry in sorted(self.fs.ls(self.staging, detail=True), key=lambda e: e["name"])
            if entry["type"] == "file" and not is_temporary(entry["name"])
        ]
        for stray in self.fs.glob(posixpath.join(self.staging, "**", f"*{TEMPORARY_SUFFIX}")):
            self.fs.rm(stray)
        manifest = Manifest(
            dataset=self.store.dataset,
            stage=self.stage,
            version=self.version,
            schema_version=self.schema_version,
            upstream=self.upstream,
            config=self.config,
            code_version=__version__,
            created_at=datetime.now(UTC).isoformat(),
            seconds=round(time.perf_counter() - self._started, 3),
            tables=tables,
            files=side_files,
            info=dict(info or {}),
        )
        final = self.store.path(self.stage, self.version)
        content = manifest.model_dump_json(indent=2).encode()
        publish_folder(self.fs, self.staging, final, MANIFEST, content)
        return self.store.ref(self.stage, self.version)
