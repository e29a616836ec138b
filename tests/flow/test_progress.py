"""What a user at a terminal sees: `neggen run` in a pseudo-terminal shows each training epoch
and a progress bar, and prints no warning (`tests/flow/test_cli.py` checks that a run whose
output is not a terminal, a CI log, draws no bar, and that the epochs reach Prefect's API)."""

from __future__ import annotations

import errno
import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from tests.support.helpers import DEMO_SETTINGS, REPO, copy_data_stages

EPOCH_LINE = re.compile(r"epoch (\d+)/3: loss [\d.]+, valid recall@20 [\d.]+ \(best [\d.]+\)")
BAR = re.compile(r"train: +(\d+)%\|[^|\r\n]*\| (\d)/3 \[")


def _in_a_terminal(command: list[str], env: dict[str, str], timeout: float) -> tuple[int, str]:
    """Run `command` with a pseudo-terminal (120 columns) as its stdin, stdout and stderr;
    returns its exit status and everything it wrote."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        stdin=follower,
        stdout=follower,
        stderr=follower,
        start_new_session=True,
    )
    os.close(follower)
    output = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 1.0)
            if not ready:
                continue
            try:
                chunk = os.read(leader, 65536)
            except OSError as exc:  # EIO: the terminal's last writer has gone
                if exc.errno != errno.EIO:
                    raise
                break
            if not chunk:
                break
            output += chunk
        else:
            raise AssertionError(f"timed out: {output.decode(errors='replace')[-3000:]}")
        return process.wait(timeout=60), output.decode("utf-8", errors="replace")
    finally:
        os.close(leader)
        if process.poll() is None:
            os.killpg(process.pid, 9)
            process.wait()


@pytest.fixture
def root_with_data(tmp_path: Path, demo_built: tuple[str, dict[str, object]]) -> Path:
    """A copy of the session's demo data stages: the run trains and evaluates."""
    root = tmp_path / "artifacts"
    copy_data_stages(demo_built[0], root)
    return root


def _env(tmp_path: Path) -> dict[str, str]:
    """The environment of a run against the session's Prefect server (the test harness's)."""
    from prefect.settings import PREFECT_API_URL

    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "PYTEST", "COV"))
    }
    env |= {
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
    }
    return env


@pytest.mark.usefixtures("prefect_harness")
def test_a_terminal_sees_each_epoch_and_a_progress_bar(
    root_with_data: Path, tmp_path: Path
) -> None:
    settings = [f"--set={s}" for s in (f"artifacts.root={root_with_data}", *DEMO_SETTINGS)]
    command = [sys.executable, "-m", "neggen", "run", *settings]
    status, output = _in_a_terminal(command, _env(tmp_path), timeout=600)
    assert status == 0, output[-3000:]

    epochs = [int(m.group(1)) for m in EPOCH_LINE.finditer(output)]
    assert epochs == [1, 2, 3], output[-3000:]  # one line per epoch, as it ends
    bars = [(int(m.group(1)), int(m.group(2))) for m in BAR.finditer(output)]
    assert (100, 3) in bars and any(done < 3 for _, done in bars), output[-3000:]
    assert "test recall@20 = " in output
    for noise in ("Warning", "warnings.warn", "Traceback"):
        assert noise not in output, output[-3000:]
