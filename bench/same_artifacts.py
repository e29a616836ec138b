"""Whether two artifact roots hold the same artifacts: the same stages and versions, every table
part file with the same sha256 (a table with wall-time columns, `training_log`: the same rows
once those columns are left out), every other file the same bytes (JSON reports: the same content
once wall times are left out), and the same manifests but for build times and the code version.
Used to show that a refactor changed no byte of what the pipeline builds; build both roots at
the same path (tables hold image paths under the root).

    python bench/same_artifacts.py ROOT_A ROOT_B [--json bench/results/same_artifacts.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

# manifest fields that describe a build, not what it built
VOLATILE = {"created_at", "seconds", "code_version"}
# reports, info and the training log hold wall times
TIMED = ("seconds", "seconds_this_attempt", "per_epoch")


def _content(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest but for build times, its info (compared without wall times), its side
    files and its tables' files (compared one by one)."""
    kept = {k: v for k, v in manifest.items() if k not in VOLATILE | {"info", "files", "tables"}}
    kept["tables"] = {
        name: {key: value for key, value in table.items() if key != "files"}
        for name, table in manifest["tables"].items()
    }
    return kept


def _same_table(a: Path, b: Path, files: list[str]) -> str | None:
    """None when the part files are byte-identical; "timed" when they differ only in wall-time
    columns; "different" otherwise."""
    if all((a / f).read_bytes() == (b / f).read_bytes() for f in files):
        return None
    left = pa.concat_tables([pq.read_table(a / f) for f in files])
    right = pa.concat_tables([pq.read_table(b / f) for f in files])
    untimed = [c for c in left.column_names if not c.endswith(TIMED)]
    return "timed" if left.select(untimed).equals(right.select(untimed)) else "different"


def _same_file(a: Path, b: Path) -> bool:
    if a.suffix == ".json":
        return bool(_untimed(json.loads(a.read_text())) == _untimed(json.loads(b.read_text())))
    return a.read_bytes() == b.read_bytes()


def artifacts(root: Path) -> dict[str, dict[str, Any]]:
    """`dataset/stage/version` -> its manifest, for every published artifact under `root`."""
    found = {}
    for path in sorted(root.glob("*/*/*/manifest.json")):
        found[str(path.parent.relative_to(root))] = json.loads(path.read_text())
    return found


def _untimed(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _untimed(v) for k, v in value.items() if not k.endswith(TIMED)}
    if isinstance(value, list):
        return [_untimed(v) for v in value]
    return value


def compare(a: Path, b: Path) -> dict[str, Any]:
    left, right = artifacts(a), artifacts(b)
    differences: list[str] = []
    timed: list[str] = []  # tables equal but for their wall-time columns
    for name in sorted(left.keys() ^ right.keys()):
        differences.append(f"{name}: only under {a if name in left else b}")
    files = 0
    for name in sorted(left.keys() & right.keys()):
        one, other = left[name], right[name]
        if _content(one) != _content(other):
            keys = sorted(k for k in _content(one) if one.get(k) != other.get(k))
            differences.append(f"{name}: manifests differ in {keys}")
        if _untimed(one.get("info")) != _untimed(other.get("info")):
            differences.append(f"{name}: manifest info differs")
        for table, entry in one["tables"].items():
            parts = [f["path"] for f in entry["files"]]
            outcome = _same_table(a / name, b / name, parts)
            if outcome == "timed":
                timed.append(f"{name}/{table}")
            elif outcome == "different":
                differences.append(f"{name}/{table} differs")
        side = sorted(f["path"] for f in one["files"])
        if side != sorted(f["path"] for f in other["files"]):
            differences.append(f"{name}: different side files")
        for path in side:
            if not _same_file(a / name / path, b / name / path):
                differences.append(f"{name}/{path} differs")
        files += sum(len(t["files"]) for t in one["tables"].values()) + len(side)
    return {
        "roots": [str(a), str(b)],
        "artifacts": sorted(left),
        "files_compared": files,
        "identical": not differences,
        "equal_but_wall_times": timed,
        "differences": differences,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--json", type=Path, help="also save the result here")
    args = parser.parse_args()
    result = compare(args.a, args.b)
    for name in result["artifacts"]:
        print(name)
    print(f"{len(result['artifacts'])} artifacts, {result['files_compared']} files compared")
    for table in result["equal_but_wall_times"]:
        print(f"{table}: the same rows but for its wall-time columns")
    for line in result["differences"]:
        print("DIFFERENT", line)
    print("identical" if result["identical"] else "NOT identical")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
