"""Real Prefect processes for the production tests: a server on a free loopback port, the
processes started beside it (each in its own session, all stopped at the end), and a thin
client of its REST API."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.helpers import REPO

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prefect_env(home: Path, url: str | None) -> dict[str, str]:
    """This environment without its PREFECT_ and NEGGEN_ deployment variables, plus a Prefect
    home of its own, analytics off and `url` as the API (none: no PREFECT_API_URL)."""
    own = ("PREFECT_", "NEGGEN_HOME", "NEGGEN_CONFIG", "NEGGEN_ARTIFACTS_ROOT")
    env = {key: value for key, value in os.environ.items() if not key.startswith(own)}
    env |= {"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    return env | ({"PREFECT_API_URL": url} if url else {})


class Processes:
    """Background processes in their own sessions, killed (with their children) at the end;
    each one's output in `<logs>/<name>.log`."""

    def __init__(self, env: dict[str, str], logs: Path, cwd: Path = REPO) -> None:
        self.env, self.logs, self.cwd = env, logs, cwd
        self.started: list[subprocess.Popen[bytes]] = []
        self.names: dict[int, str] = {}

    def start(self, name: str, *command: str) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}.log").open("ab") as sink:
            process = subprocess.Popen(
                command,
                cwd=self.cwd,
                env=self.env,
                stdout=sink,
                stderr=sink,
                start_new_session=True,
            )
        self.started.append(process)
        self.names[process.pid] = name
        return process

    def output(self, process: subprocess.Popen[bytes]) -> str:
        """What `process` has written so far (with anything earlier under its name)."""
        return (self.logs / f"{self.names[process.pid]}.log").read_text(errors="replace")

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    def stop_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.started:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def run(self, *command: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command, cwd=self.cwd, env=self.env, capture_output=True, text=True, timeout=timeout
        )

    def start_server(self, port: int, api: Api) -> None:
        """`prefect server start` on 127.0.0.1:`port`, waited on through `/health`."""
        self.start(
            "server",
            str(BIN / "prefect"),
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        )
        wait("the Prefect server", api.healthy, 120, self.logs)


class Api:
    def __init__(self, url: str) -> None:
        self.url = url

    def post(self, path: str, body: dict[str, Any]) -> Any:
        request = urllib.request.Request(
            f"{self.url}{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            return json.load(reply)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as reply:
                return bool(reply.status == 200)
        except OSError:
            return False

    def deployments(self) -> dict[str, Any]:
        return {d["name"]: d for d in self.post("/deployments/filter", {})}

    def runs(self, deployment_id: str) -> list[dict[str, Any]]:
        body = {"deployments": {"id": {"any_": [deployment_id]}}}
        return list(self.post("/flow_runs/filter", body))


def wait(what: str, check: Callable[[], object], timeout: float, logs: Path) -> None:
    """Poll `check` until it is true; past `timeout`, fail with the tails of the logs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    tails = {p.name: p.read_text(errors="replace")[-2000:] for p in logs.glob("*.log")}
    raise AssertionError(f"timed out waiting for {what}: {tails}")
