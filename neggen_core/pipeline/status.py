"""What is built: each stage's artifact under a config, complete, up to date or damaged."""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from typing import Any

from neggen_core.artifacts.store import ArtifactStore
from neggen_core.config import NeggenConfig
from neggen_core.pipeline.spec import StageSpec
from neggen_core.pipeline.stages import STAGE_ORDER, STAGES, open_store, plan_versions
from neggen_core.redaction import redact


def _artifact_status(
    config: NeggenConfig, store: ArtifactStore, spec: StageSpec, expected: str, damaged: set[str]
) -> dict[str, Any]:
    """One stage's status; `damaged` collects the stages whose artifact (at the expected
    version) is damaged or rests on a damaged one."""
    name, version = spec.name, expected
    if not store.exists(name, expected):
        versions = store.versions(name)
        version = versions[-1] if versions else expected
    exists = store.exists(name, version)
    problems = store.verify(name, version) if exists else []
    upstream = [up for up in spec.inputs(config) if up in damaged]
    if exists and version == expected and (problems or upstream):
        damaged.add(name)
    complete = exists and not problems
    uri = store.ref(name, version).uri
    tables = store.manifest(name, version).tables if exists else {}
    return {
        "version": version,
        "path": uri,
        "complete": complete,
        "up_to_date": complete and version == expected and not upstream,
        "expected_version": expected,
        "damaged": problems,
        "damaged_upstream": upstream,
        "tables": {table: posixpath.join(uri, table) for table in tables},
    }


def status(config: NeggenConfig, extra: Sequence[StageSpec] = ()) -> dict[str, Any]:
    """Each stage's artifact: version, path, whether it is complete (every file as its manifest
    says, checksums included) and up to date (nor resting on a damaged artifact), and the folder
    URI of each of its tables (none when not built); each `extra` stage (the comparison) under
    its own name."""
    store = open_store(config)
    versions = plan_versions(config, extra)
    damaged: set[str] = set()
    report: dict[str, Any] = {
        "dataset": config.dataset.name,
        "root": redact(config.artifacts.root),
        "stages": {
            name: _artifact_status(config, store, STAGES[name], versions[name], damaged)
            for name in STAGE_ORDER
        },
    }
    for spec in extra:
        report[spec.name] = _artifact_status(config, store, spec, versions[spec.name], damaged)
    report["damaged"] = sorted(damaged, key=[*STAGE_ORDER, *(s.name for s in extra)].index)
    return report
