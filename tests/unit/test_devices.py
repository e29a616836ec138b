"""`train.device` and `embeddings.device`: a missing GPU is a configuration error before
anything runs, the device is in no version, and everything a model holds moves with it."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch

from neggen.cli import EXIT_USAGE, main
from neggen_core import devices
from neggen_core.artifacts.store import ArtifactRef
from neggen_core.config import NeggenConfig, load_config
from neggen_core.errors import ConfigError
from neggen_core.evaluation.evaluator import Evaluator
from neggen_core.models.base import Recommender
from neggen_core.models.registry import build_model, build_sampler
from neggen_core.pipeline.stages import open_store, plan_versions
from neggen_core.train.compute import fit
from neggen_core.train.contract import load_training_data
from tests.support.helpers import DEMO_SETTINGS

DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


def _config(root: str, *more: str) -> NeggenConfig:
    return load_config(None, [f"artifacts.root={root}", *DEMO_SETTINGS, *more])


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.mark.usefixtures("no_cuda")
def test_auto_is_the_cpu_and_cuda_a_clear_error_without_cuda() -> None:
    assert devices.resolve("auto", "train.device") == torch.device("cpu")
    assert devices.resolve("cpu", "train.device") == torch.device("cpu")
    with pytest.raises(ConfigError, match=r"train.device is cuda, but torch .* sees no CUDA"):
        devices.resolve("cuda", "train.device")
    with pytest.raises(ConfigError, match=r"train\.device"):
        load_config(None, ["train.device=gpu"])  # not a device name


@pytest.mark.usefixtures("no_cuda")
@pytest.mark.parametrize(
    ("command", "setting"),
    [
        (["run"], "train.device=cuda"),
        (["run", "--until", "embeddings"], "embeddings.device=cuda:1"),
        (["compare"], "train.device=cuda"),
    ],
)
def test_a_missing_gpu_stops_the_cli_before_any_stage(
    tmp_path: Any, capsys: pytest.CaptureFixture[str], command: list[str], setting: str
) -> None:
    argv = [*command, "--set", f"artifacts.root={tmp_path}", "--set", setting]
    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    key = setting.split("=")[0]
    assert f"neggen: error: {key} is {setting.split('=')[1]}, but torch" in err
    assert f"set {key}: auto" in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())  # nothing ran


@pytest.mark.usefixtures("no_cuda")
def test_a_gpu_the_stages_do_not_use_is_not_checked(tmp_path: Any) -> None:
    config = _config(str(tmp_path), "train.device=cuda", "embeddings.device=cuda")
    devices.check(config, ["ingest", "attributes"])
    with pytest.raises(ConfigError, match=r"embeddings\.device"):
        devices.check(config, ["negatives"])  # its near-copy check encodes


def test_the_device_is_in_no_version(tmp_path: Any) -> None:
    versions = [
        plan_versions(_config(str(tmp_path), f"train.device={d}", f"embeddings.device={d}"))
        for d in ("auto", "cpu", "cuda", "cuda:1")
    ]
    assert all(v == versions[0] for v in versions)


def _tensors(value: Any, where: str) -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(value, torch.Tensor):
        yield where, value
    elif isinstance(value, (tuple, list)):
        for i, part in enumerate(value):
            yield from _tensors(part, f"{where}[{i}]")
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            yield from _tensors(getattr(value, field.name), f"{where}.{field.name}")


def held_tensors(model: Recommender) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor the model holds: parameters, buffers, and tensors kept in attributes."""
    yield from model.named_parameters()
    yield from model.named_buffers()
    for prefix, module in model.named_modules():
        for name, value in vars(module).items():
            if not name.startswith("_"):
                yield from _tensors(value, f"{prefix}.{name}")


@pytest.mark.parametrize(
    "settings",
    [
        ("train.model=mf",),
        ("train.model=lightgcn",),
        ("train.model=vbpr",),
        ("train.model=freedom",),
        ("train.model=neggen",),
        ("train.model=neggen", "train.backbone=freedom", "train.neggen.virtual_node=true"),
    ],
    ids=lambda s: "+".join(v.split("=")[1] for v in s),
)
def test_everything_a_model_holds_moves_to_its_device(
    demo_built: tuple[str, dict[str, ArtifactRef]], settings: tuple[str, ...]
) -> None:
    """Moved to `meta` (a device every machine has), not a tensor stays behind: a graph or a
    feature table left on the CPU would fail on a GPU at the first product."""
    root, refs = demo_built
    config = _config(root, "train.device=cpu", *settings)
    data = load_training_data(open_store(config), refs["ingest"], refs["embeddings"])
    model = build_model(config.train, data)
    before = dict(held_tensors(model))
    assert {t.device.type for t in before.values()} == {"cpu"}
    model.to("meta")
    moved = dict(held_tensors(model))
    assert moved.keys() == before.keys()
    left = [name for name, tensor in moved.items() if tensor.device.type != "meta"]
    assert not left, left
    assert model.device == torch.device("meta")
    assert model.as_tensor(np.arange(3)).device == torch.device("meta")


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.parametrize(
    "settings",
    [("train.model=neggen", "train.sampler=dns"), ("train.model=lightgcn", "train.sampler=mixgcf")],
    ids=["neggen+dns", "lightgcn+mixgcf"],
)
def test_training_and_ranking_run_on_the_device_and_agree_with_the_cpu(
    demo_built: tuple[str, dict[str, ArtifactRef]], device: str, settings: tuple[str, ...]
) -> None:
    """Two epochs and both rankings on each device torch has here (the CPU, and CUDA where
    there is one): the model stays on its device, its saved state and its rankings come back
    on the CPU, and on a GPU the result is the CPU's up to floating-point order."""
    root, refs = demo_built
    data = load_training_data(
        open_store(_config(root)), refs["ingest"], refs["embeddings"], choices=True
    )
    runs = {}
    for name in dict.fromkeys(("cpu", device)):
        config = _config(root, f"train.device={name}", "train.epochs=2", *settings)
        model = build_model(config.train, data)
        evaluator = Evaluator(data, config.evaluate)
        result = fit(model, build_sampler(config.train, data), data, evaluator, config.train)
        assert model.device.type == name
        assert {t.device.type for t in result.best_state.values()} == {"cpu"}
        ranking = evaluator.rank(model, "test")
        assert isinstance(ranking.items, np.ndarray) and len(result.log) == 2
        runs[name] = (result, ranking)
    (cpu_result, cpu_test), (result, test) = runs["cpu"], runs[device]
    for key, value in cpu_result.best_state.items():
        assert torch.allclose(value, result.best_state[key], atol=1e-3), key
    assert abs(cpu_test.metrics["recall@20"] - test.metrics["recall@20"]) < 0.02
