"""The core's imports point down: from the pipeline to the stages, from a stage's job to its
compute and contract, from the stages to the libraries they use, never the other way.

Every import in `neggen_core/` (function-local ones included) is checked against the layers
below; a stage reads another stage only through that stage's `contract.py`, and no module but the
table of stages (`pipeline/stages.py`) imports a stage's `job.py`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "neggen_core"

# lowest first; a module may import its own layer or a lower one
FOUNDATION = {
    "neggen_core": 0,
    "errors": 0,
    "redaction": 0,
    "progress": 0,
    "provenance": 0,
    "config": 1,
    "threads": 2,
    "devices": 2,
    "images": 2,
    "artifacts": 2,
    "data": 3,
    "categories": 3,
    "sharding": 3,
    "pipeline.spec": 3,
    "demo": 3,
    "encoders": 4,
    "llm": 5,
    "models": 6,
    "evaluation": 7,
}
STAGES = ("ingest", "attributes", "negatives", "embeddings", "train", "evaluate")
STAGE_PART = {"contract": 0, "compute": 1, "job": 2}  # a stage's other modules are compute
FIRST_STAGE_LAYER = 10
TOP = {"pipeline": 40, "compare": 50, "inventory": 60}


def stage_of(module: str) -> str | None:
    head = module.split(".")[0]
    return head if head in STAGES else None


def part_of(module: str) -> str:
    tail = module.split(".")[-1]
    return tail if tail in STAGE_PART else "compute"


def layer(module: str) -> int:
    """The layer of a module named relative to neggen_core (`ingest.job`, `pipeline.run`)."""
    if (stage := stage_of(module)) is not None:
        if module == stage:  # the package's __init__
            return FIRST_STAGE_LAYER + 3 * STAGES.index(stage)
        return FIRST_STAGE_LAYER + 3 * STAGES.index(stage) + STAGE_PART[part_of(module)]
    for prefix in sorted(FOUNDATION, key=len, reverse=True):
        if module == prefix or module.startswith(f"{prefix}."):
            return FOUNDATION[prefix]
    head = module.split(".")[0]
    if head in TOP:
        return TOP[head]
    raise AssertionError(f"neggen_core.{module} has no layer: add it to test_layers.py")


def imports_of(source: str, module: str, is_package: bool) -> set[str]:
    """The neggen_core modules `source` imports, relative to neggen_core."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package[: len(package) - node.level + 1]
                base = ".".join(["neggen_core", *anchor, *([base] if base else [])])
            # `from package import module` names a module; `from module import name` does not
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for name in names:
            if name == "neggen_core" or name.startswith("neggen_core."):
                found.add(name.removeprefix("neggen_core").removeprefix("."))
    return {name for name in found if _is_module(name)}


def _is_module(name: str) -> bool:
    path = CORE.joinpath(*name.split(".")) if name else CORE
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def violations(module: str, imported: set[str]) -> list[str]:
    """What is wrong with `module` importing `imported` (both relative to neggen_core)."""
    problems = []
    own_stage = stage_of(module)
    for target in sorted(imported):
        if not target or target == module:
            continue
        target_stage = stage_of(target)
        if layer(target) > layer(module):
            problems.append(
                f"{module} -> {target}: points up (layer {layer(module)} -> {layer(target)})"
            )
        if module.split(".")[0] in ("models", "evaluation") and target_stage is not None:
            problems.append(f"{module} -> {target}: a library imports a stage module")
        reads_stages = own_stage is not None or module.startswith("compare")
        if reads_stages and target_stage is not None and target_stage != own_stage:
            allowed = {"contract"} | ({"compute"} if module.startswith("compare") else set())
            if target != target_stage and part_of(target) not in allowed:
                problems.append(
                    f"{module} -> {target}: another stage is read only through its contract"
                )
        if (
            target_stage is not None
            and part_of(target) == "job"
            and target_stage != own_stage
            and module != "pipeline.stages"
        ):
            problems.append(f"{module} -> {target}: only the table of stages imports a job")
    return problems


def core_modules() -> dict[str, tuple[str, bool]]:
    modules = {}
    for path in sorted(CORE.rglob("*.py")):
        parts = path.relative_to(CORE).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_package else parts)
        modules[name] = (path.read_text(encoding="utf-8"), is_package)
    return modules


def test_every_import_in_the_core_points_down() -> None:
    problems = [
        problem
        for module, (source, is_package) in core_modules().items()
        for problem in violations(module, imports_of(source, module, is_package))
    ]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("module", "source", "problem"),
    [
        (
            "models.neggen",
            "from neggen_core.train.contract import load_training_data",
            "a library imports a stage module",
        ),
        ("encoders.image", "from neggen_core.llm.lexicon_backend import silhouette", "points up"),
        (
            "negatives.job",
            "from neggen_core.attributes.job import AttributesJob",
            "only through its contract",
        ),
        ("compare.stage", "from neggen_core.train.job import build", "only the table"),
        ("ingest.contract", "from neggen_core.ingest import job", "points up"),
        ("train.job", "from neggen_core.pipeline.run import run_stage", "points up"),
    ],
)
def test_the_check_finds_an_import_that_points_the_wrong_way(
    module: str, source: str, problem: str
) -> None:
    found = violations(module, imports_of(source, module, is_package=False))
    assert any(problem in line for line in found), found


def test_allowed_imports_pass_the_check() -> None:
    allowed = {
        "negatives.job": "from neggen_core.attributes.contract import read_attributes",
        "evaluate.job": "from neggen_core.train.contract import model_state",
        "pipeline.stages": "from neggen_core.train.job import SPEC",
        "models.neggen": "from neggen_core.data import ItemFeatures",
    }
    for module, source in allowed.items():
        assert violations(module, imports_of(source, module, is_package=False)) == []
