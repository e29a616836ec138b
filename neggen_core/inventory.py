"""The versions on disk: what each stage holds (`neggen ls`), what a set of configs still needs,
and removing the rest (`neggen gc`).

A config needs what it resolves to (every stage and its comparison), the latest negatives round
regenerated on it with what was built on that round, the runs its comparison trained, and
everything those were built from. Versions replaced by `neggen run --rebuild` are kept aside
until a gc removes them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from neggen_core.artifacts.store import ArtifactStore
from neggen_core.compare import plan as planning
from neggen_core.compare.stage import SPEC as COMPARE
from neggen_core.config import NeggenConfig, with_settings
from neggen_core.errors import ConfigError
from neggen_core.pipeline.run import superseded
from neggen_core.pipeline.spec import StageSpec
from neggen_core.pipeline.stages import (
    STAGE_ORDER,
    STAGES,
    next_negatives_round,
    open_store,
    plan_versions,
)

ALL_STAGES = (*STAGE_ORDER, COMPARE.name)


@dataclass(frozen=True)
class VersionInfo:
    """One version of a stage on disk."""

    stage: str
    version: str
    created_at: str
    bytes: int
    current: bool  # what the given config resolves to
    summary: str  # its settings that differ from the config's ("" when none)
    folder: str  # its folder name under the stage (a superseded one's differs from `version`)
    superseded: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "version": self.version,
            "created_at": self.created_at,
            "bytes": self.bytes,
            "current": self.current,
            "superseded": self.superseded,
            "summary": self.summary,
        }


def _flat(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flat(item, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): value}


def _differences(settings: Mapping[str, Any], reference: Mapping[str, Any]) -> str:
    """`key=value` for each setting that is not the reference's (a short config summary)."""
    ours, theirs = _flat(settings), _flat(reference)
    changed = [
        f"{key}={json.dumps(ours.get(key), default=str)}"
        for key in sorted(ours.keys() | theirs.keys())
        if ours.get(key) != theirs.get(key)
    ]
    return ", ".join(changed)


def _summary(
    settings: Mapping[str, Any],
    reference: Mapping[str, Any],
    upstream: Mapping[str, str],
    current: Mapping[str, str],
) -> str:
    """How a version differs from what the config resolves to: its settings, then the upstream
    versions it was built on where those are not the current ones."""
    built_on = [f"{stage} {v}" for stage, v in upstream.items() if current.get(stage) != v]
    parts = [_differences(settings, reference), "on " + ", ".join(built_on) if built_on else ""]
    return "; ".join(part for part in parts if part)


def _spec(stage: str) -> StageSpec:
    return COMPARE if stage == COMPARE.name else STAGES[stage]


def list_versions(config: NeggenConfig) -> list[VersionInfo]:
    """Every version of every stage on disk (oldest first within a stage), replaced ones too."""
    store = open_store(config)
    current = plan_versions(config, [COMPARE])
    found: list[VersionInfo] = []
    for stage in ALL_STAGES:
        reference = _spec(stage).version_config(config)
        folders = [(version, version, False) for version in store.versions(stage)]
        folders += [(version, folder, True) for version, folder in superseded(store, stage)]
        for version, folder, replaced in folders:
            manifest = store.manifest(stage, folder)
            size = sum(f.bytes for t in manifest.tables.values() for f in t.files)
            found.append(
                VersionInfo(
                    stage=stage,
                    version=version,
                    created_at=manifest.created_at,
                    bytes=size + sum(f.bytes for f in manifest.files),
                    current=not replaced and version == current[stage],
                    summary=_summary(manifest.config, reference, manifest.upstream, current),
                    folder=folder,
                    superseded=replaced,
                )
            )
    return found


def _comparison_runs(config: NeggenConfig, store: ArtifactStore) -> set[tuple[str, str]]:
    """The train and evaluate versions of the runs this config's comparison has built: the plan
    replayed from the valid scores of the runs on disk, as far as they go."""
    try:
        planning.check(config)
    except ConfigError:
        return set()
    scores: dict[planning.Run, float] = {}
    kept: set[tuple[str, str]] = set()
    while True:
        _, todo = planning.advance(config, scores)
        progressed = False
        for run in todo:
            built = planning.artifacts(config, run)
            if not store.exists("evaluate", built.evaluate.version):
                if store.exists("train", built.train.version):
                    kept.add(("train", built.train.version))
                continue
            scores[run] = planning.valid_score(store, built)
            kept |= {("train", built.train.version), ("evaluate", built.evaluate.version)}
            progressed = True
        if not progressed:
            return kept


def needed(configs: Sequence[NeggenConfig]) -> set[tuple[str, str]]:
    """The (stage, version) pairs these configs need, upstream artifacts included."""
    if not configs:
        raise ConfigError("gc: give at least one --config whose artifacts are to be kept")
    store = open_store(configs[0])
    roots: set[tuple[str, str]] = set()
    for config in configs:
        resolved = [config]
        latest = next_negatives_round(config) - 1
        if latest > config.negatives.round:
            resolved.append(with_settings(config, {"negatives.round": latest}))
        for each in resolved:
            roots |= set(plan_versions(each, [COMPARE]).items())
        roots |= _comparison_runs(config, store)
    return _with_upstream(store, {pair for pair in roots if store.exists(*pair)})


def _with_upstream(store: ArtifactStore, roots: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
    kept: set[tuple[str, str]] = set()
    todo = list(roots)
    while todo:
        stage, version = todo.pop()
        if (stage, version) in kept or not store.exists(stage, version):
            continue
        kept.add((stage, version))
        todo.extend(store.manifest(stage, version).upstream.items())
    return kept


def collect(configs: Sequence[NeggenConfig], remove: bool = False) -> list[VersionInfo]:
    """The versions no config in `configs` needs, and replaced versions; removed (each under its
    artifact's lock) when `remove`, else only listed. The configs must share a root and dataset."""
    places = {(c.artifacts.root, c.dataset.name) for c in configs}
    if len(places) > 1:
        raise ConfigError(
            f"gc: the configs point at different artifact roots or datasets ({sorted(places)}); "
            "collect one root and dataset at a time"
        )
    keep = needed(configs)
    config = configs[0]
    store = open_store(config)
    garbage = [
        info
        for info in list_versions(config)
        if info.superseded or (info.stage, info.version) not in keep
    ]
    if remove:
        for info in garbage:
            with store.lock(info.stage, info.version, "gc", config.artifacts.lock_timeout_s):
                store.remove(info.stage, info.folder)
    return garbage
