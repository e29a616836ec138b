"""The trust boundary for item images: which `image_uri` the pipeline reads, and reading it.

An `image_uri` comes from an input file and is untrusted. The pipeline reads it only when it is
- a path inside the image root (`dataset.image_root`, by default the folder of the metadata
  file; a relative path is relative to that file's folder): `..` and symlinks are resolved
  first, and a path that lands outside the root is refused; on an object store, a URI of the
  root's protocol under the root's prefix; or
- an http(s) URL, and only with `dataset.fetch_images: true`: fetched by the pipeline itself with
  a timeout, a size limit and redirects to http(s) only.
Never a `file://` URL, a chained fsspec URL (`simplecache::...`), a `data:` URI or any other
scheme. A file over the size limit, or an image over Pillow's decompression-bomb limit, is
refused too. Every refusal is an `ImageRefused` naming the reason: the item is then text-only.
No backend is given a URL to fetch; the vLLM backend sends the bytes read here, downscaled to
its pixel budget where larger (`within_pixels`).
"""

from __future__ import annotations

import io
import math
import os
import posixpath
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, TypeVar

import fsspec
import numpy as np
from PIL import Image

MAX_BYTES = 32 * 2**20
T = TypeVar("T")
IMAGE_SIDE = 64  # the side of the square pixel grid that image features are read from
MAX_PIXELS = 64_000_000  # Pillow raises DecompressionBombError past twice its own limit
SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*):")


class ImageRefused(Exception):
    """An image the pipeline will not read, or could not: the reason."""


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        if not newurl.lower().startswith(("http://", "https://")):
            raise ImageRefused(f"redirected to a URL that is not http(s): {newurl[:100]}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


@dataclass(frozen=True)
class ImagePolicy:
    """Where images may come from, and how much of one is read."""

    root: str | None  # a local folder or an fsspec URI; None: no file is read
    base: str | None = None  # what a relative path is relative to (None: the root)
    fetch_http: bool = False
    max_bytes: int = MAX_BYTES
    timeout_s: float = 10.0

    def locate(self, uri: str) -> str:
        """The file or URL `uri` names, if it may be read; `ImageRefused` otherwise."""
        if "::" in uri:
            raise ImageRefused("a chained fsspec URL is never read")
        scheme = SCHEME.match(uri)
        protocol = scheme.group(1).lower() if scheme else None
        if protocol in ("http", "https"):
            if not self.fetch_http:
                raise ImageRefused(
                    "an http(s) image URL, not fetched (dataset.fetch_images: true allows it)"
                )
            return uri
        if protocol is not None and (protocol in ("file", "local", "data") or "://" not in uri):
            raise ImageRefused(f"a {protocol}: URI is never read")
        if self.root is None:
            raise ImageRefused("no image root: no image file is read")
        base = self.base or self.root
        root_protocol = SCHEME.match(self.root) if "://" in self.root else None
        if protocol is not None or root_protocol is not None:
            return self._remote(uri, protocol, base)
        root = os.path.realpath(self.root)
        path = os.path.realpath(os.path.join(base, uri))
        if os.path.commonpath([root, path]) != root:
            raise ImageRefused(f"outside the image root {self.root}")
        return path

    def _remote(self, uri: str, protocol: str | None, base: str) -> str:
        root_protocol, _, root_path = self.root.partition("://")  # type: ignore[union-attr]
        if protocol is None:
            base_protocol, _, base_path = base.partition("://")
            return self._remote(
                f"{base_protocol}://{posixpath.join(base_path, uri)}", base_protocol, base
            )
        _, _, path = uri.partition("://")
        normal = posixpath.normpath(path)
        base = posixpath.normpath(root_path)
        if protocol != root_protocol.lower() or not normal.startswith(base.rstrip("/") + "/"):
            raise ImageRefused(f"outside the image root {self.root}")
        return f"{root_protocol}://{normal}"

    def read(self, uri: str) -> bytes:
        """The image's bytes (at most `max_bytes`)."""
        where = self.locate(uri)
        try:
            if where.lower().startswith(("http://", "https://")):
                return self._fetch(where)
            with fsspec.open(where, "rb") as handle:
                data: bytes = handle.read(self.max_bytes + 1)
        except FileNotFoundError as exc:
            raise ImageRefused("no such file") from exc
        except OSError as exc:
            raise ImageRefused(f"unreadable ({exc.strerror or exc})") from exc
        if len(data) > self.max_bytes:
            raise ImageRefused(f"larger than {self.max_bytes:,} bytes")
        return data

    def _fetch(self, url: str) -> bytes:
        opener = urllib.request.build_opener(_HttpOnlyRedirects)
        try:
            with opener.open(url, timeout=self.timeout_s) as reply:
                data: bytes = reply.read(self.max_bytes + 1)
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise ImageRefused(f"not fetched ({exc})") from exc
        if len(data) > self.max_bytes:
            raise ImageRefused(f"larger than {self.max_bytes:,} bytes")
        return data

    def load(self, uri: str) -> Image.Image:
        """The image, decoded to RGB; refused past the pixel limit or when it does not decode."""
        return _decoded(self.read(uri), lambda image: image.convert("RGB"))

    def read_checked(self, uri: str) -> tuple[bytes, str]:
        """The image's bytes as they are, and their MIME type, once Pillow has recognised them
        as an image within the pixel limit."""
        data = self.read(uri)
        mime = _decoded(data, lambda image: Image.MIME.get(image.format or "", "image/png"))
        return data, mime


def fitted_size(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """(width, height) scaled down, aspect kept, to at most `max_pixels` pixels (unchanged
    when within)."""
    if width * height <= max_pixels:
        return width, height
    scale = math.sqrt(max_pixels / (width * height))
    fitted = [max(1, math.floor(width * scale)), max(1, math.floor(height * scale))]
    while fitted[0] * fitted[1] > max_pixels:  # a side floored to 1 can leave it over
        fitted[fitted.index(max(fitted))] -= 1
    return fitted[0], fitted[1]


def within_pixels(data: bytes, mime: str, max_pixels: int) -> tuple[bytes, str]:
    """An image's bytes and MIME type with at most `max_pixels` pixels: as they are when within,
    else downscaled (aspect kept, Lanczos) and encoded again, a JPEG as JPEG, anything else as
    PNG. The same bytes always give the same result."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            size = fitted_size(image.width, image.height, max_pixels)
            if size == image.size:
                return data, mime
            if image.width * image.height > MAX_PIXELS:
                raise ImageRefused(f"over {MAX_PIXELS:,} pixels")
            jpeg = image.format == "JPEG"
            image.draft(None, size)  # a JPEG is decoded at a fraction of its size where it can
            if jpeg:
                mode = "L" if image.mode == "L" else "RGB"
            elif image.mode in ("RGB", "RGBA", "L", "LA"):
                mode = image.mode
            else:
                transparent = "A" in image.mode or "transparency" in image.info
                mode = "RGBA" if transparent else "RGB"
            small = image.convert(mode).resize(size, Image.Resampling.LANCZOS)
    except (Image.DecompressionBombError, OSError, ValueError, SyntaxError) as exc:
        raise ImageRefused(f"not a readable image ({exc})") from exc
    buffer = io.BytesIO()
    if jpeg:
        small.save(buffer, format="JPEG", quality=90)
        return buffer.getvalue(), "image/jpeg"
    small.save(buffer, format="PNG")
    return buffer.getvalue(), "image/png"


def _decoded(data: bytes, use: Callable[[Image.Image], T]) -> T:
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > MAX_PIXELS:
                raise ImageRefused(f"over {MAX_PIXELS:,} pixels")
            return use(image)
    except (Image.DecompressionBombError, OSError, ValueError, SyntaxError) as exc:
        raise ImageRefused(f"not a readable image ({exc})") from exc


def pixel_grid(image: Image.Image) -> np.ndarray:
    """An image as the (IMAGE_SIDE, IMAGE_SIDE, 3) uint8 RGB grid every pixel feature reads."""
    image = image.convert("RGB").resize((IMAGE_SIDE, IMAGE_SIDE), Image.Resampling.NEAREST)
    return np.asarray(image)


def _spans(mask: np.ndarray) -> np.ndarray:
    """Each row filled from its first to its last set pixel."""
    index = np.arange(mask.shape[1])
    first = np.where(mask.any(axis=1), np.argmax(mask, axis=1), mask.shape[1])
    last = np.where(mask.any(axis=1), mask.shape[1] - 1 - np.argmax(mask[:, ::-1], axis=1), -1)
    filled: np.ndarray = (index[None, :] >= first[:, None]) & (index[None, :] <= last[:, None])
    return filled


def silhouette(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(foreground mask, background colour). The background is the border's median colour; the
    object is what differs from it, with gaps inside (a pattern in the background's colour)
    closed by filling between the outermost object pixels of every row and column."""
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    background = np.median(border, axis=0)
    distance = np.abs(pixels.astype(np.int32) - background.astype(np.int32)).sum(axis=2)
    differs = distance > 60
    return _spans(differs) & _spans(differs.T).T, background
