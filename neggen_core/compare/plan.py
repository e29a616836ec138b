"""What `neggen compare` trains: methods x seeds, after a grid searched on valid only.

A method is a backbone and a name: a real-negative sampler (`lightgcn` + `dns`) or NegGen on
that backbone (`neggen`, `neggen[no_causal]`, ...). Each run is an ordinary train + evaluate
pair of artifacts under a derived config, so a run already built (by an earlier comparison or by
`neggen run`) is reused, and a killed comparison resumes where it stopped.

1. Grid: every combination of `compare.grid[name]` is trained with the first seed; the one with
   the best valid Recall@20 is chosen (ties: the first in grid order). NegGen's ablations take
   NegGen's choice on the same backbone, so that they differ from it only in the ablation; a
   backbone left out of `compare.grid_backbones` takes the choice made on a listed one.
2. Seeds: every method with its chosen values and `compare.seeds` seeds (`train.seed + i`); the
   first seed's run is the grid's own.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, get_args

from neggen_core.artifacts.store import ArtifactRef, ArtifactStore
from neggen_core.config import NegGenAblation, NeggenConfig, with_settings
from neggen_core.errors import ArtifactError, ConfigError
from neggen_core.models.registry import BACKBONES, SAMPLERS, check_names, method_name
from neggen_core.stages import open_store, plan_versions
from neggen_core.training.trainer import SELECTION_METRIC

ABLATIONS: tuple[str, ...] = tuple(a for a in get_args(NegGenAblation) if a != "none")


@dataclass(frozen=True)
class Method:
    """One compared method: `name` on `backbone`."""

    backbone: str
    name: str

    @property
    def base(self) -> str:
        """The name without its ablation: the key of its grid."""
        return self.name.partition("[")[0]

    @property
    def ablation(self) -> str:
        return self.name.partition("[")[2].rstrip("]") or "none"

    @property
    def is_neggen(self) -> bool:
        return self.base == "neggen"

    def settings(self) -> dict[str, Any]:
        """The train keys that make a config train this method."""
        if self.is_neggen:
            return {
                "train.model": "neggen",
                "train.backbone": self.backbone,
                "train.neggen.ablation": self.ablation,
            }
        return {"train.model": self.backbone, "train.sampler": self.name}


@dataclass(frozen=True)
class Run:
    """One training run: a method, a seed and the grid values it is trained with."""

    method: Method
    seed: int
    params: tuple[tuple[str, Any], ...] = ()

    def config(self, base: NeggenConfig) -> NeggenConfig:
        settings = {**self.method.settings(), **dict(self.params), "train.seed": self.seed}
        return with_settings(base, settings)

    @property
    def params_json(self) -> str:
        return json.dumps(dict(self.params), sort_keys=True)


@dataclass(frozen=True)
class RunArtifacts:
    """A run's train and evaluate artifacts (built or not), and its method's result label."""

    run: Run
    label: str
    config: NeggenConfig
    train: ArtifactRef
    evaluate: ArtifactRef


@dataclass
class Plan:
    """The grid runs of every method, what was chosen, and the final runs."""

    methods: tuple[Method, ...]
    seeds: tuple[int, ...]
    grid: dict[Method, list[Run]] = field(default_factory=dict)
    chosen: dict[Method, tuple[tuple[str, Any], ...]] = field(default_factory=dict)

    def final_runs(self) -> list[Run]:
        return [Run(m, seed, self.chosen[m]) for m in self.methods for seed in self.seeds]


def parse_methods(config: NeggenConfig) -> tuple[Method, ...]:
    """The configured methods, checked against the registry."""
    methods: list[Method] = []
    for backbone, names in config.compare.methods.items():
        if backbone not in BACKBONES:
            raise ConfigError(
                f"compare.methods: unknown backbone {backbone!r} (known: {', '.join(BACKBONES)})"
            )
        for name in names:
            method = Method(backbone, name)
            known_base = method.base in SAMPLERS or method.is_neggen
            known_ablation = method.ablation == "none" or (
                method.is_neggen and method.ablation in ABLATIONS
            )
            if not (known_base and known_ablation) or name.count("[") > 1:
                raise ConfigError(
                    f"compare.methods.{backbone}: unknown method {name!r} (known: "
                    f"{', '.join(SAMPLERS)}, neggen, "
                    + ", ".join(f"neggen[{a}]" for a in ABLATIONS)
                    + ")"
                )
            if method not in methods:
                methods.append(method)
    if not methods:
        raise ConfigError("compare.methods: no method to compare")
    return tuple(methods)


def restrict(
    config: NeggenConfig, methods: list[str] | None, backbones: list[str] | None
) -> NeggenConfig:
    """The config with `--methods` / `--backbones` applied: the backbones kept, and on each the
    methods given (or the configured ones)."""
    chosen = config.compare.methods
    for backbone in backbones or []:
        if backbone not in BACKBONES:
            raise ConfigError(
                f"--backbones: unknown backbone {backbone!r} (known: {', '.join(BACKBONES)})"
            )
    keep = backbones or list(chosen)
    restricted = {b: tuple(methods) if methods else chosen.get(b, ()) for b in keep}
    restricted = {b: names for b, names in restricted.items() if names}
    if not restricted:
        raise ConfigError(
            f"--backbones {' '.join(keep)}: none of them has methods in compare.methods; "
            "name them with --methods"
        )
    return with_settings(config, {"compare.methods": restricted})


def comparison_config(
    config: NeggenConfig,
    methods: list[str] | None = None,
    backbones: list[str] | None = None,
    seeds: int | None = None,
) -> NeggenConfig:
    """The config with `--methods` / `--backbones` / `--seeds` applied, checked whole."""
    if methods or backbones:
        config = restrict(config, methods, backbones)
    if seeds is not None:
        config = with_settings(config, {"compare.seeds": seeds})
    check(config)
    return config


def grid_points(config: NeggenConfig, method: Method) -> list[tuple[tuple[str, Any], ...]]:
    """Every combination of the method's grid, in grid order (one empty point without a grid)."""
    grid = config.compare.grid.get(method.base, {})
    keys = list(grid)
    return [tuple(zip(keys, values, strict=True)) for values in itertools.product(*grid.values())]


def seeds(config: NeggenConfig) -> tuple[int, ...]:
    return tuple(config.train.seed + i for i in range(config.compare.seeds))


def check(config: NeggenConfig) -> Plan:
    """Validate every method and grid point before anything is trained."""
    plan = Plan(parse_methods(config), seeds(config))
    for backbone in config.compare.grid_backbones or ():
        if backbone not in BACKBONES:
            raise ConfigError(
                f"compare.grid_backbones: unknown backbone {backbone!r} "
                f"(known: {', '.join(BACKBONES)})"
            )
    for base, grid in config.compare.grid.items():
        for key in grid:
            if not key.startswith("train."):
                raise ConfigError(
                    f"compare.grid.{base}: {key} is not a train setting; a grid varies train.* "
                    "keys only (the compared runs share every other stage)"
                )
    for method in plan.methods:
        grid_method = Method(method.backbone, method.base)
        for point in grid_points(config, grid_method):
            check_names(Run(method, plan.seeds[0], point).config(config).train)
    return plan


def artifacts(config: NeggenConfig, run: Run) -> RunArtifacts:
    """The run's artifact refs under this config (whether built or not)."""
    run_config = run.config(config)
    versions = plan_versions(run_config)
    store = open_store(run_config)
    return RunArtifacts(
        run=run,
        label=method_name(run_config.train),
        config=run_config,
        train=store.ref("train", versions["train"]),
        evaluate=store.ref("evaluate", versions["evaluate"]),
    )


def valid_score(store: ArtifactStore, built: RunArtifacts) -> float:
    """The run's valid Recall@20 (from its evaluate report)."""
    if not store.exists("evaluate", built.evaluate.version):
        raise ArtifactError(
            f"{built.evaluate.uri}: the evaluate artifact of {built.label} (seed "
            f"{built.run.seed}) is missing; run `neggen compare` with this config to build it"
        )
    return float(store.read_json(built.evaluate, "report.json")["valid"][SELECTION_METRIC])


def grid_source(config: NeggenConfig, methods: tuple[Method, ...], method: Method) -> Method:
    """The method whose grid decides `method`'s values: its own name without the ablation, on
    its backbone, or on the first of `compare.grid_backbones` that runs it when its backbone is
    not listed there."""
    listed = config.compare.grid_backbones
    if listed is not None and method.backbone not in listed:
        for backbone in listed:
            if any(m.backbone == backbone and m.base == method.base for m in methods):
                return Method(backbone, method.base)
    return Method(method.backbone, method.base)


def resolve(
    config: NeggenConfig, train_and_evaluate: Callable[[RunArtifacts], None] | None = None
) -> Plan:
    """Search the grids and fill in the chosen values.

    With `train_and_evaluate`, every grid run is built through it first (a built one is
    skipped by the stage machinery); without, they must exist already."""
    plan = check(config)
    store = open_store(config)

    def search(grid_method: Method) -> None:
        runs = [Run(grid_method, plan.seeds[0], p) for p in grid_points(config, grid_method)]
        scores = {}
        for run in runs:
            built = artifacts(config, run)
            if train_and_evaluate is not None:
                train_and_evaluate(built)
            scores[run] = valid_score(store, built)
        plan.grid[grid_method] = runs
        plan.chosen[grid_method] = max(runs, key=lambda r: scores[r]).params  # first of ties

    for method in plan.methods:
        source = grid_source(config, plan.methods, method)
        if source not in plan.chosen:
            search(source)
        plan.chosen[method] = plan.chosen[source]
    return plan


def run_all(
    config: NeggenConfig, train_and_evaluate: Callable[[RunArtifacts], None]
) -> tuple[Plan, list[RunArtifacts]]:
    """Search the grids, then build every method's runs over the seeds."""
    plan = resolve(config, train_and_evaluate)
    final = [artifacts(config, run) for run in plan.final_runs()]
    for built in final:
        train_and_evaluate(built)
    return plan, final


def describe(params: Mapping[str, Any] | tuple[tuple[str, Any], ...]) -> str:
    """`lambda 0.4, alpha 0.01`-style text of grid values (their last key part)."""
    items = params.items() if isinstance(params, Mapping) else params
    return ", ".join(f"{key.rsplit('.', 1)[-1]} {value}" for key, value in items) or "defaults"
