"""Credentials in URLs (userinfo, signed-URL tokens) never reach a manifest, a report, a table of
quarantined records, an error or the log."""

from __future__ import annotations

import functools
import gzip
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from neggen.cli import main
from neggen_core.config import load_config
from neggen_core.demo.generator import generate_demo
from neggen_core.pipeline.run import run_stage
from neggen_core.pipeline.stages import open_store
from neggen_core.redaction import redact
from tests.support.helpers import run_logs
from tests.support.standin_server import Settings, StandIn

SECRET, TOKEN = "hunter2", "SIGNATURE0123"


def test_redact_removes_userinfo_and_query_strings() -> None:
    signed = f"see https://ann:{SECRET}@data.example.com/b.json.gz?X-Amz-Signature={TOKEN}&x=1"
    assert redact(signed) == "see https://***@data.example.com/b.json.gz?***"
    assert redact("s3://bucket/key@v2/file.json") == "s3://bucket/key@v2/file.json"
    assert redact("/data/local/file.json?not-a-url") == "/data/local/file.json?not-a-url"
    assert redact("http://a:b@h/1 and http://h/2?t=3") == "http://***@h/1 and http://h/2?***"


class Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    """The demo catalogue, with one malformed metadata line, over HTTP (queries are ignored)."""
    files = generate_demo(str(tmp_path / "demo"), "small", 7, progress=False)
    meta = Path(files.meta)
    meta.write_bytes(gzip.compress(gzip.decompress(meta.read_bytes()) + b"{'asin': \n"))
    handler = functools.partial(Quiet, directory=str(tmp_path / "demo"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_dataset_urls_are_written_without_their_credentials(served: str, tmp_path: Path) -> None:
    base = f"http://ann:{SECRET}@{served}"
    config = load_config(
        None,
        [
            f"artifacts.root={tmp_path / 'artifacts'}",
            "dataset.demo=null",
            f"dataset.interactions={base}/reviews_Demo_5.json.gz?X-Amz-Signature={TOKEN}",
            f"dataset.items={base}/meta_Demo.json.gz?sig={TOKEN}",
        ],
    )
    ref = run_stage(config, "ingest", {}).ref
    store = open_store(config)
    assert store.manifest("ingest", ref.version).tables["quarantine"].rows == 1
    written = [p for p in Path(ref.uri).rglob("*") if p.is_file() and p.suffix != ".parquet"]
    quarantine = store.read_frame(ref, "quarantine", _quarantine_schema())
    texts = [p.read_text() for p in written] + quarantine["source_file"].to_list()
    assert texts and not any(SECRET in t or TOKEN in t for t in texts)
    assert f"http://***@{served}/meta_Demo.json.gz?***" in quarantine["source_file"].to_list()


def _quarantine_schema() -> object:
    from neggen_core.artifacts.schemas import QUARANTINE

    return QUARANTINE


def test_a_server_url_with_credentials_is_never_printed(
    root: str, capsys: pytest.CaptureFixture[str], prefect_harness: None
) -> None:
    since = datetime.now(UTC)
    with StandIn(Settings(fail_after=0)) as dead:
        url = dead.base_url.replace("http://", f"http://ann:{SECRET}@")
        overrides = [*dead.overrides(), f"llm.vllm.base_url={url}", "llm.vllm.max_retries=0"]
        args = [f"--set=artifacts.root={root}", *(f"--set={o}" for o in overrides)]
        assert main(["run", "--until", "attributes", *args]) == 1  # a pipeline failure
    err = capsys.readouterr().err
    assert "gave no reply" in err and SECRET not in err and "http://***@127.0.0.1" in err
    logs = run_logs(since)
    assert "gave no reply" in logs and SECRET not in logs
