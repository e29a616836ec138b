"""`neggen`: run the pipeline, show its artifacts, generate the demo catalogue."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

import fsspec

from neggen_core.config import load_config
from neggen_core.errors import NeggenError
from neggen_core.models.registry import check_names
from neggen_core.stages import STAGE_ORDER, select_stages, status


def _config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="PATH", help="YAML config (default: the demo)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config value (repeatable), e.g. --set ingest.k_core=10",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neggen", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the pipeline as the Prefect flow `neggen`")
    _config_args(run)
    run.add_argument("--from", dest="from_stage", choices=STAGE_ORDER, help="first stage to run")
    run.add_argument("--until", dest="until_stage", choices=STAGE_ORDER, help="last stage to run")

    stat = commands.add_parser("status", help="each stage's artifact and whether it is up to date")
    _config_args(stat)
    stat.add_argument("--json", action="store_true", help="print JSON")

    demo = commands.add_parser("demo-data", help="write the synthetic demo catalogue")
    demo.add_argument("--scale", choices=("small", "baby"), default="small")
    demo.add_argument("--out", metavar="DIR", help="output folder (default: ./demo-data/SCALE)")
    demo.add_argument("--seed", type=int, default=7)
    return parser


def _run(args: argparse.Namespace) -> int:
    check_names(load_config(args.config, args.overrides).train)
    select_stages(args.from_stage, args.until_stage)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from flows.neggen import neggen

    uris = neggen(
        config_path=args.config,
        overrides=args.overrides,
        from_stage=args.from_stage,
        until_stage=args.until_stage,
    )
    for stage, uri in uris.items():
        print(f"{stage}: {uri}")
    if "evaluate" in uris:
        with fsspec.open(f"{uris['evaluate'].rstrip('/')}/report.json", "r") as handle:
            report = json.load(handle)
        test = report["test"]
        print(
            f"test recall@20 = {test['recall@20']:.4f}, ndcg@20 = {test['ndcg@20']:.4f} "
            f"({report['method']}, best valid epoch {report['best_epoch']})"
        )
    return 0


def _status(args: argparse.Namespace) -> int:
    report = status(load_config(args.config, args.overrides))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"dataset {report['dataset']} under {report['root']}")
    for name, stage in report["stages"].items():
        state = (
            "up to date" if stage["up_to_date"] else ("stale" if stage["complete"] else "not built")
        )
        print(f"  {name:<12} {stage['version']}  {state:<10}  {stage['path']}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from neggen_core.demo.generator import generate_demo

    out = args.out or os.path.join("demo-data", args.scale)
    files = generate_demo(out, args.scale, args.seed)
    print(
        f"wrote {files.users:,} users, {files.items:,} items, {files.interactions:,} interactions "
        f"to {files.folder} (reviews: {files.reviews}, metadata: {files.meta})"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handlers = {"run": _run, "status": _status, "demo-data": _demo}
    try:
        return handlers[args.command](args)
    except NeggenError as exc:
        print(f"neggen: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
