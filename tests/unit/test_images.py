"""The image trust boundary: an `image_uri` from an input file is read only inside the image
root, or over http(s) when allowed; everything else is refused, never read, never fetched."""

from __future__ import annotations

import ast
import gzip
import hashlib
import io
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from PIL import Image

from neggen_core.artifacts.schemas import DESCRIPTIONS, ITEMS
from neggen_core.config import load_config
from neggen_core.demo.generator import generate_demo
from neggen_core.embeddings.contract import read_embeddings
from neggen_core.images import ImagePolicy, ImageRefused
from neggen_core.pipeline.run import run_stage
from neggen_core.pipeline.stages import STAGE_ORDER, open_store
from tests.support.standin_server import StandIn


class Listener:
    """A TCP listener on loopback that counts the connections made to it (and answers none)."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.socket.settimeout(0.2)
        self.port = self.socket.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self.socket.accept()
            except TimeoutError:
                continue
            self.connections += 1
            connection.close()

    def __enter__(self) -> Listener:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.socket.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    with Listener() as running:
        yield running


def _png(path: Path) -> Path:
    Image.new("RGB", (16, 16), (30, 70, 200)).save(path)
    return path


def test_paths_inside_the_root_are_read_and_everything_else_refused(
    tmp_path: Path, listener: Listener
) -> None:
    root = tmp_path / "images"
    root.mkdir()
    _png(root / "a.png")
    secret = tmp_path / "secret.txt"
    secret.write_text("password")
    (root / "link.png").symlink_to(secret)
    policy = ImagePolicy(root=str(root))
    assert policy.load("a.png").size == (16, 16)
    assert policy.load(str(root / "a.png")).size == (16, 16)
    url = f"http://127.0.0.1:{listener.port}/a.png"
    refused = {
        "../secret.txt": "outside the image root",
        str(secret): "outside the image root",
        "link.png": "outside the image root",  # a symlink is resolved first
        "../../../../etc/passwd": "outside the image root",
        "/etc/shadow": "outside the image root",
        "file:///etc/passwd": "a file: URI is never read",
        f"simplecache::{url}": "a chained fsspec URL",
        url: "not fetched (dataset.fetch_images: true allows it)",
        "data:image/png;base64,AAAA": "a data: URI is never read",
        "missing.png": "no such file",
    }
    for uri, reason in refused.items():
        with pytest.raises(ImageRefused, match=reason.replace("(", r"\(").replace(")", r"\)")):
            policy.load(uri)
    assert listener.connections == 0
    with pytest.raises(ImageRefused, match="no image root"):
        ImagePolicy(root=None).read("a.png")


def test_large_files_and_bombs_are_refused(tmp_path: Path) -> None:
    _png(tmp_path / "a.png")
    with pytest.raises(ImageRefused, match="larger than 20 bytes"):
        ImagePolicy(root=str(tmp_path), max_bytes=20).read("a.png")
    Image.new("1", (9000, 9000)).save(tmp_path / "bomb.png")  # 81 Mpx, a few kB
    with pytest.raises(ImageRefused, match="over 64,000,000 pixels"):
        ImagePolicy(root=str(tmp_path)).load("bomb.png")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ImageRefused, match="not a readable image"):
        ImagePolicy(root=str(tmp_path)).read_checked("text.png")


def test_http_images_are_fetched_only_when_allowed(tmp_path: Path) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    data = io.BytesIO()
    Image.new("RGB", (4, 4), (1, 2, 3)).save(data, format="PNG")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path in ("/file", "/ftp"):
                self.send_response(302)
                target = "file:///etc/passwd" if self.path == "/file" else "ftp://127.0.0.1/x"
                self.send_header("Location", target)
                self.end_headers()
                return
            self.send_response(200)
            self.end_headers()
            self.wfile.write(data.getvalue())

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        allowed = ImagePolicy(root=None, fetch_http=True)
        assert allowed.load(f"{base}/a.png").size == (4, 4)
        with pytest.raises(ImageRefused, match=r"not fetched .*'file:///etc/passwd' is not"):
            allowed.read(f"{base}/file")
        with pytest.raises(ImageRefused, match="redirected to a URL that is not http"):
            allowed.read(f"{base}/ftp")
    finally:
        server.shutdown()
        server.server_close()


HOSTILE = ("../../../../etc/passwd", "/etc/shadow", "file:///etc/passwd", "simplecache::{url}")


def _tampered_demo(folder: Path, url: str, secret: Path) -> tuple[str, str, set[str]]:
    """The demo catalogue with items' images pointing where they must not (outside the root,
    file://, chained, an http URL) or at a missing file: (reviews, meta, their item ids)."""
    files = generate_demo(str(folder / "demo"), "small", 7, progress=False)
    lines = gzip.decompress(Path(files.meta).read_bytes()).decode().splitlines()
    hostile = [*HOSTILE, str(secret), "images/missing.png", url]
    tampered = set()
    for i, target in enumerate(hostile):
        record = ast.literal_eval(lines[i])
        record["imUrl"] = target.format(url=url)
        lines[i] = repr(record)
        tampered.add(record["asin"])
    Path(files.meta).write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    return files.reviews, files.meta, tampered


@pytest.mark.parametrize("backend", ["lexicon", "vllm"])
def test_hostile_image_uris_leave_items_text_only_and_nothing_leaves(
    tmp_path: Path, listener: Listener, backend: str
) -> None:
    secret = tmp_path / "secret.png"
    _png(secret)  # a real image outside the root: its bytes must not reach any server
    url = f"http://127.0.0.1:{listener.port}/image.png"
    reviews, meta, asins = _tampered_demo(tmp_path, url, secret)
    settings = [
        f"artifacts.root={tmp_path / 'artifacts'}",
        "dataset.demo=null",
        f"dataset.interactions={reviews}",
        f"dataset.items={meta}",
        "llm.zero_shot=false",
        "negatives.per_item=1",
    ]
    with StandIn() as server:
        if backend == "vllm":
            settings += [*server.overrides(), "negatives.controls=false"]
        config = load_config(None, settings)
        refs = {}
        for stage in STAGE_ORDER[: STAGE_ORDER.index("embeddings") + 1]:
            refs[stage] = run_stage(config, stage, refs).ref
        received = server.tally.images
    assert listener.connections == 0
    assert hashlib.sha256(secret.read_bytes()).hexdigest() not in received
    assert Path("/etc/passwd").exists()  # (the probes were real)

    store = open_store(config)
    items = store.read_frame(refs["ingest"], "items", ITEMS)
    tampered = items.filter(pl.col("item_id").is_in(list(asins))).height
    assert tampered >= 6  # (the 5-core kept them)
    descriptions = store.read_frame(refs["attributes"], "descriptions", DESCRIPTIONS)
    images = descriptions.filter(pl.col("modality") == "image")
    skipped = images.filter(pl.col("status") == "skipped")
    assert skipped.height == tampered and skipped["text"].null_count() == tampered
    assert images.filter(pl.col("status") == "ok")["text"].null_count() == 0
    report = store.read_json(refs["attributes"], "report.json")
    assert sum(report["images_not_read"].values()) == tampered
    if backend == "vllm":
        assert 0 < len(received) <= images.height - tampered  # the other items' images only
    embeddings = read_embeddings(store, refs["embeddings"], "item_embeddings")
    assert embeddings.column("image_features").null_count == tampered
    failures = store.read_json(refs["embeddings"], "report.json")["image_failures"]
    assert len(failures) == tampered
