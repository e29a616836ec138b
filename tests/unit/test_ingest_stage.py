"""The ingest stage end to end on the demo catalogue: versions, skip, crash safety, fsspec roots."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import fsspec
import pytest

from neggen_core.artifacts.schemas import INTERACTIONS, ITEMS, QUARANTINE, USERS
from neggen_core.artifacts.store import ArtifactWriter
from neggen_core.config import load_config
from neggen_core.ingest.contract import image_policy
from neggen_core.pipeline.run import run_stage
from neggen_core.pipeline.stages import open_store, plan_versions
from neggen_core.pipeline.status import status


def _files(folder: str) -> dict[str, int]:
    return {
        os.path.join(d, f): os.stat(os.path.join(d, f)).st_mtime_ns
        for d, _, names in os.walk(folder)
        for f in names
    }


def test_builds_once_then_skips_and_a_new_setting_is_a_new_version(root: str) -> None:
    config = load_config(None, [f"artifacts.root={root}"])
    first = run_stage(config, "ingest", {})
    assert not first.skipped
    store = open_store(config)
    manifest = store.manifest("ingest", first.ref.version)
    assert set(manifest.tables) == {"users", "items", "interactions", "quarantine"}
    assert manifest.tables["quarantine"].rows == 0
    assert manifest.info["users"] == manifest.tables["users"].rows
    before = _files(first.ref.uri)

    again = run_stage(config, "ingest", {})
    assert again.skipped and again.ref == first.ref
    assert _files(first.ref.uri) == before

    stricter = load_config(None, [f"artifacts.root={root}", "ingest.k_core=7"])
    assert plan_versions(stricter)["ingest"] != first.ref.version
    third = run_stage(stricter, "ingest", {})
    assert not third.skipped
    assert _files(first.ref.uri) == before
    assert store.versions("ingest") == [first.ref.version, third.ref.version]
    assert (
        store.manifest("ingest", third.ref.version).tables["users"].rows
        < manifest.tables["users"].rows
    )

    report = status(config)["stages"]["ingest"]
    assert report == {
        "version": first.ref.version,
        "path": first.ref.uri,
        "complete": True,
        "up_to_date": True,
        "expected_version": first.ref.version,
        "damaged": [],
        "damaged_upstream": [],
        "tables": {
            t: f"{first.ref.uri}/{t}" for t in ("users", "items", "interactions", "quarantine")
        },
    }


def test_tables_follow_their_schemas_and_demo_images_exist(root: str) -> None:
    config = load_config(None, [f"artifacts.root={root}"])
    ref = run_stage(config, "ingest", {}).ref
    store = open_store(config)
    for name, schema in (
        ("users", USERS),
        ("items", ITEMS),
        ("interactions", INTERACTIONS),
        ("quarantine", QUARANTINE),
    ):
        assert store.read_table(ref, name, schema).schema == schema
    items = store.read_frame(ref, "items", ITEMS)
    assert items.get_column("image_uri").null_count() == 0
    # relative to the metadata file's folder (the demo's source folder), so the root can move
    source = Path(image_policy(config, store).base or "")
    for uri in items.get_column("image_uri").head(20):
        assert uri.startswith("images/") and (source / uri).is_file()
    report = store.read_json(ref, "report.json")
    assert report["items_with_image"] == items.height


def test_crash_in_the_middle_leaves_no_artifact(root: str, monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config(None, [f"artifacts.root={root}"])
    original = ArtifactWriter.write_table

    def crash_on_interactions(
        self: ArtifactWriter, table: str, data: object, part: int = 0
    ) -> None:
        if table == "interactions":
            raise KeyboardInterrupt("killed")
        original(self, table, data, part)  # type: ignore[arg-type]

    monkeypatch.setattr(ArtifactWriter, "write_table", crash_on_interactions)
    with pytest.raises(KeyboardInterrupt):
        run_stage(config, "ingest", {})
    store = open_store(config)
    version = plan_versions(config)["ingest"]
    assert not store.exists("ingest", version)
    assert not Path(store.path("ingest", version)).exists()
    assert status(config)["stages"]["ingest"]["complete"] is False

    monkeypatch.setattr(ArtifactWriter, "write_table", original)
    outcome = run_stage(config, "ingest", {})
    assert not outcome.skipped and store.exists("ingest", version)
    clean_root = str(Path(root).parent / "clean")
    clean = run_stage(load_config(None, [f"artifacts.root={clean_root}"]), "ingest", {})
    clean_store = open_store(load_config(None, [f"artifacts.root={clean_root}"]))
    assert clean.ref.version == version
    for name, schema in (("users", USERS), ("items", ITEMS), ("interactions", INTERACTIONS)):
        rebuilt = store.read_table(outcome.ref, name, schema)
        fresh = clean_store.read_table(clean.ref, name, schema)
        assert rebuilt.equals(fresh)  # image paths too: relative, whatever the root


def test_runs_on_an_fsspec_memory_root() -> None:
    root = f"memory://neggen-{uuid.uuid4().hex}"
    config = load_config(None, [f"artifacts.root={root}"])
    try:
        ref = run_stage(config, "ingest", {}).ref
        assert ref.uri.startswith("memory://")
        store = open_store(config)
        items = store.read_frame(ref, "items", ITEMS)
        first_image = items.get_column("image_uri")[0]
        assert first_image.startswith("images/")
        assert image_policy(config, store).read(first_image)[:8] == b"\x89PNG\r\n\x1a\n"
        assert run_stage(config, "ingest", {}).skipped
    finally:
        fsspec.filesystem("memory").rm(root.removeprefix("memory://"), recursive=True)
