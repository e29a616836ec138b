"""What `neggen compare` trains: methods x seeds, after a search of equal budget on valid only.

A method is a backbone and a name: a real-negative sampler (`lightgcn` + `dns`) or NegGen on
that backbone (`neggen`, `neggen[real_only]`, ...). Each run is an ordinary train + evaluate
pair of artifacts under a derived config, so a run already built (by an earlier comparison or by
`neggen run`) is reused, and a killed comparison resumes where it stopped.

The plan's decisions are pure: `advance` turns the valid scores known so far into the runs to
build next, and the flow (`flows/compare.py`) maps those over its task runner as they become
known; `built_plan` and `valid_score` read the scores of runs already built.

1. Search, the same budget for every method: a method's points are its whole grid
   (`compare.grid[name]`, and for a baseline its backbone's `compare.grid[backbone]`, every
   combination) when it has at most `compare.budget` of them, else a seeded random sample of
   `budget` points, kept in grid order (the same sample for NegGen and each of its ablations).
   Each point is trained with the first seed; the best valid Recall@20 is chosen (ties: the
   first in grid order). NegGen's ablations are searched as NegGen is, each
   on its own: a control tuned less than the method it controls would flatter the method.
2. NegGen's real negatives: the baselines are searched first; NegGen and its ablations then
   take the sampler (among rns, dns, ahns) whose baseline on the same backbone did best on
   valid, with that baseline's chosen values (a NegGen grid that varies them overrides them).
3. A backbone left out of `compare.grid_backbones` takes every choice made on the first listed
   backbone that runs the method.
4. Seeds: every method with its chosen values and `compare.seeds` seeds (`train.seed + i`); the
   first seed's run is the search's own.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, get_args

from neggen_core.artifacts.store import ArtifactRef, ArtifactStore
from neggen_core.config import NegGenAblation, NeggenConfig, with_settings
from neggen_core.errors import ArtifactError, ConfigError
from neggen_core.evaluate.contract import read_report
from neggen_core.models.registry import (
    BACKBONES,
    NEGGEN_SAMPLERS,
    SAMPLERS,
    MethodId,
)
from neggen_core.pipeline.stages import open_store, plan_versions
from neggen_core.train.compute import SELECTION_METRIC

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
    """A run's train and evaluate artifacts (built or not), and the method its config trains."""

    run: Run
    method_id: MethodId
    config: NeggenConfig
    train: ArtifactRef
    evaluate: ArtifactRef

    @property
    def label(self) -> str:
        return self.method_id.label


Params = tuple[tuple[str, Any], ...]


@dataclass
class Plan:
    """The search runs of every searched method, their valid scores, what was chosen, and the
    sampler settings NegGen took from a baseline."""

    methods: tuple[Method, ...]
    seeds: tuple[int, ...]
    grid: dict[Method, list[Run]] = field(default_factory=dict)
    valid: dict[Run, float] = field(default_factory=dict)
    chosen: dict[Method, Params] = field(default_factory=dict)
    inherited: dict[Method, Params] = field(default_factory=dict)

    def final_runs(self) -> list[Run]:
        """Every chosen method's runs over the seeds."""
        return [
            Run(m, seed, self.chosen[m])
            for m in self.methods
            if m in self.chosen
            for seed in self.seeds
        ]


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


def method_grid(config: NeggenConfig, method: Method) -> dict[str, tuple[Any, ...]]:
    """The method's grid: its backbone's (`compare.grid[backbone]`, a baseline's only: NegGen
    takes the values its baseline chose) and its own (`compare.grid[name]`)."""
    backbone = {} if method.is_neggen else config.compare.grid.get(method.backbone, {})
    return {**backbone, **config.compare.grid.get(method.base, {})}


def grid_points(config: NeggenConfig, method: Method) -> list[Params]:
    """Every combination of the method's grid, in grid order (one empty point without a grid)."""
    grid = method_grid(config, method)
    keys = list(grid)
    return [tuple(zip(keys, values, strict=True)) for values in itertools.product(*grid.values())]


def search_points(config: NeggenConfig, method: Method) -> list[Params]:
    """The points a method is tuned with: its whole grid when it has at most `compare.budget`
    points, else a random sample of that many seeded by `train.seed` and the method's name
    without its ablation, in grid order."""
    points = grid_points(config, method)
    budget = config.compare.budget
    if len(points) <= budget:
        return points
    name = method.base
    if not method.is_neggen and method.backbone in config.compare.grid:
        name = f"{method.backbone}+{name}"
    rng = random.Random(f"{config.train.seed}:{name}")
    return [points[i] for i in sorted(rng.sample(range(len(points)), budget))]


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
        if base not in (*SAMPLERS, "neggen", *BACKBONES):
            raise ConfigError(
                f"compare.grid.{base}: not a method (a sampler, neggen) or a backbone (known: "
                f"{', '.join((*SAMPLERS, 'neggen', *BACKBONES))})"
            )
        for key in grid:
            if not key.startswith("train."):
                raise ConfigError(
                    f"compare.grid.{base}: {key} is not a train setting; a grid varies train.* "
                    "keys only (the compared runs share every other stage)"
                )
    controlled = [m for m in plan.methods if m.ablation == "random_intervention"]
    if controlled and not config.negatives.controls:
        raise ConfigError(
            f"compare.methods.{controlled[0].backbone}: {controlled[0].name} trains on control "
            "negatives; set negatives.controls: true (or leave the method out)"
        )
    for method in plan.methods:
        for point in grid_points(config, method):
            Run(method, plan.seeds[0], point).config(config)  # a grid point's settings validate
    return plan


def label(config: NeggenConfig, run: Run) -> str:
    """How results name the run's method: `lightgcn+dns`, `neggen(lightgcn)+dns`."""
    return MethodId.of(run.config(config).train).label


def artifacts(config: NeggenConfig, run: Run) -> RunArtifacts:
    """The run's artifact refs under this config (whether built or not)."""
    run_config = run.config(config)
    versions = plan_versions(run_config)
    store = open_store(run_config)
    return RunArtifacts(
        run=run,
        method_id=MethodId.of(run_config.train),
        config=run_config,
        train=store.ref("train", versions["train"]),
        evaluate=store.ref("evaluate", versions["evaluate"]),
    )


def valid_score(store: ArtifactStore, run: RunArtifacts) -> float:
    """The run's valid Recall@20 (from its evaluate report, which must be built)."""
    if not store.exists("evaluate", run.evaluate.version):
        raise ArtifactError(
            f"{run.evaluate.uri}: the evaluate artifact of {run.label} (seed "
            f"{run.run.seed}) is missing; run `neggen compare` with this config to build it"
        )
    return float(read_report(store, run.evaluate)["valid"][SELECTION_METRIC])


def grid_source(config: NeggenConfig, methods: tuple[Method, ...], method: Method) -> Method:
    """The method whose search decides `method`'s values: itself, or the same method on the
    first of `compare.grid_backbones` that runs it when its backbone is not listed there."""
    listed = config.compare.grid_backbones
    if listed is not None and method.backbone not in listed:
        for backbone in listed:
            if Method(backbone, method.name) in methods:
                return Method(backbone, method.name)
    return method


def merged(*params: Params) -> Params:
    """Settings in order, a later value of a key replacing an earlier one."""
    out: dict[str, Any] = {}
    for part in params:
        out.update(part)
    return tuple(out.items())


def advance(config: NeggenConfig, scores: Mapping[Run, float]) -> tuple[Plan, list[Run]]:
    """The plan as far as the valid scores known so far decide it, and the runs still to build
    whose settings are decided: the search runs of every method whose inputs are chosen (NegGen's
    wait for the baselines on their backbone), then every chosen method's seed runs.

    Pure: a comparison is built by calling it again as scores arrive, until no run is left."""
    plan = check(config)
    todo: list[Run] = []
    open_methods: set[Method] = set()  # searched, some score still missing

    def neggen_sampler(method: Method) -> Params | None:
        """The best searched baseline on the backbone that NegGen can take, with its values;
        None while one of them is still being searched, unless it is the only one and has a
        single point (its choice is then decided before its score is known)."""

        def takeable(m: Method) -> bool:
            return m.backbone == method.backbone and not m.is_neggen and m.name in NEGGEN_SAMPLERS

        candidates = [m for m in plan.grid if takeable(m)]
        searching = [m for m in open_methods if takeable(m)]
        if searching:
            if candidates or len(searching) > 1:
                return None
            points = search_points(config, searching[0])
            if len(points) > 1:
                return None
            return (("train.sampler", searching[0].name), *merged(*points))
        if not candidates:
            return ()
        best = max(candidates, key=lambda m: plan.valid[Run(m, plan.seeds[0], plan.chosen[m])])
        return (("train.sampler", best.name), *plan.chosen[best])

    def search(method: Method) -> None:
        base = neggen_sampler(method) if method.is_neggen else ()
        if base is None:
            open_methods.add(method)
            return
        plan.inherited[method] = base
        runs = [
            Run(method, plan.seeds[0], merged(base, point))
            for point in search_points(config, method)
        ]
        missing = [run for run in runs if run not in scores]
        if missing:
            todo.extend(missing)
            open_methods.add(method)
            return
        plan.valid.update((run, scores[run]) for run in runs)
        plan.grid[method] = runs
        plan.chosen[method] = max(runs, key=lambda r: plan.valid[r]).params  # first of ties

    for method in sorted(plan.methods, key=lambda m: m.is_neggen):  # stable: baselines first
        source = grid_source(config, plan.methods, method)
        if source not in plan.chosen and source not in open_methods:
            search(source)
        if source in plan.chosen:
            plan.chosen[method] = plan.chosen[source]
    final = [run for run in plan.final_runs() if run not in scores and run not in todo]
    return plan, [*todo, *final]


def built_plan(config: NeggenConfig) -> Plan:
    """The whole plan, read from the built runs' evaluate reports (each must exist)."""
    store = open_store(config)
    scores: dict[Run, float] = {}
    while True:
        plan, todo = advance(config, scores)
        if not todo:
            return plan
        for run in todo:
            scores[run] = valid_score(store, artifacts(config, run))


def describe(params: Mapping[str, Any] | tuple[tuple[str, Any], ...]) -> str:
    """`lambda 0.4, alpha 0.01`-style text of grid values (their last key part)."""
    items = params.items() if isinstance(params, Mapping) else params
    return ", ".join(f"{key.rsplit('.', 1)[-1]} {value}" for key, value in items) or "defaults"
