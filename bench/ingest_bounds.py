"""Peak memory of ingest on hostile files, against the same ingest of the plain file.

Three Amazon 2023 review files, each ingested in its own process: `plain` (the records),
`newline_bomb` (a gzip of `--newlines` blank lines before the same records: ~100 KB that
inflate to ~100 MB), and `long_line` (the records plus one 50 MB line). Prints and saves each
run's peak RSS, wall time and its ratio to `plain`: bounded memory means the hostile files cost
about what the plain one does, not what they inflate to.

    python bench/ingest_bounds.py [--newlines 100000000] [--out bench/results/ingest_bounds.json]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent


def _records(users: int = 200, items: int = 50) -> bytes:
    lines = [
        json.dumps(
            {
                "user_id": f"U{u}",
                "parent_asin": f"I{(u + i) % items}",
                "rating": 4,
                "timestamp": 1_600_000_000_000 + 1000 * i,
            }
        )
        for u in range(users)
        for i in range(10)
    ]
    return ("\n".join(lines) + "\n").encode()


def _repeat(out: IO[bytes], byte: bytes, count: int, piece: int = 1 << 20) -> None:
    for start in range(0, count, piece):
        out.write(byte * min(piece, count - start))


def _child(reviews: str, meta: str) -> None:
    from neggen_core.ingest.job import ingest_files

    started = time.perf_counter()
    result = ingest_files("amazon2023", reviews, meta, 1)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    counts = {"interactions": result.interactions.height, "quarantined": result.quarantine.height}
    print(json.dumps({"seconds": round(seconds, 3), "peak_rss_mb": round(peak, 1), **counts}))


def _measure(reviews: Path, meta: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", str(reviews), str(meta)],
        capture_output=True,
        text=True,
        check=True,
    )
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures | {"file_bytes": reviews.stat().st_size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--newlines", type=int, default=100_000_000)
    parser.add_argument("--long-line-mb", type=int, default=50)
    parser.add_argument("--out", default=str(HERE / "results" / "ingest_bounds.json"))
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return

    records = _records()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        meta = folder / "meta.jsonl"
        meta.write_text("\n".join(json.dumps({"parent_asin": f"I{i}"}) for i in range(50)))
        files = {
            "plain": folder / "plain.jsonl.gz",
            "newline_bomb": folder / "bomb.jsonl.gz",
            "long_line": folder / "long.jsonl.gz",
        }
        files["plain"].write_bytes(gzip.compress(records))
        # written in pieces: a child's peak RSS starts at its parent's (fork), so the parent
        # stays small
        with gzip.open(files["newline_bomb"], "wb", compresslevel=9) as out:
            _repeat(out, b"\n", args.newlines)
            out.write(records)
        with gzip.open(files["long_line"], "wb", compresslevel=9) as out:
            out.write(records + b'{"user_id": "U0", "text": "')
            _repeat(out, b"x", args.long_line_mb << 20)
            out.write(b'"}\n')
        runs = {name: _measure(path, meta) for name, path in files.items()}

    plain = runs["plain"]["peak_rss_mb"]
    for figures in runs.values():
        figures["peak_rss_vs_plain"] = round(figures["peak_rss_mb"] / plain, 2)
    result = {
        "benchmark": "ingest peak memory on hostile files vs the plain file",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "newlines": args.newlines,
        "long_line_mb": args.long_line_mb,
        "runs": runs,
    }
    text = json.dumps(result, indent=2)
    print(text)
    Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
