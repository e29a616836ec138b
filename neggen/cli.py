"""`neggen`: run the pipeline, compare methods, show the artifacts, write the demo catalogue."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import fsspec

from neggen_core import devices
from neggen_core.compare.plan import comparison_config
from neggen_core.compare.stage import SPEC as COMPARE
from neggen_core.config import load_config
from neggen_core.errors import ConfigError, NeggenError
from neggen_core.inventory import collect, list_versions
from neggen_core.pipeline.catalog import write_catalog
from neggen_core.pipeline.stages import STAGE_ORDER, select_stages
from neggen_core.pipeline.status import status
from neggen_core.redaction import redact

# exit statuses: argparse's 2 for usage, which a bad config or setting also is
EXIT_FAILED = 1  # the pipeline failed (bad input, a server down, a damaged artifact read)
EXIT_USAGE = 2
EXIT_NOT_READY = 3  # `status`: an artifact is damaged; `status --check`: anything not up to date


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
    run.add_argument(
        "--rebuild",
        nargs="+",
        choices=STAGE_ORDER,
        metavar="STAGE",
        help="build these stages again for this config (the old artifacts are kept aside "
        "until `neggen gc`)",
    )

    comp = commands.add_parser(
        "compare", help="train every method on the same artifacts; write the table and report"
    )
    _config_args(comp)
    comp.add_argument(
        "--methods",
        nargs="+",
        metavar="NAME",
        help="methods on each backbone: rns dns mixgcf ahns neggen neggen[ABLATION] "
        "(default: compare.methods)",
    )
    comp.add_argument(
        "--backbones", nargs="+", metavar="NAME", help="backbones: lightgcn mf (default: all)"
    )
    comp.add_argument(
        "--seeds", type=int, metavar="N", help="seeds per method (default: compare.seeds)"
    )

    serve = commands.add_parser(
        "serve",
        help="serve the deployments neggen/full and neggen/regenerate-negatives (one process)",
    )
    _config_args(serve)

    stat = commands.add_parser("status", help="each stage's artifact and whether it is up to date")
    _config_args(stat)
    stat.add_argument("--json", action="store_true", help="print JSON")
    stat.add_argument(
        "--check",
        action="store_true",
        help=f"exit {EXIT_NOT_READY} unless every stage is built, intact and up to date",
    )

    catalog = commands.add_parser(
        "catalog", help="write a DuckDB catalog (views) of this config's artifacts"
    )
    _config_args(catalog)

    listing = commands.add_parser("ls", help="every version of every stage on disk")
    _config_args(listing)
    listing.add_argument("--json", action="store_true", help="print JSON")

    gc = commands.add_parser(
        "gc", help="remove the versions no given config needs (a dry run unless --delete)"
    )
    gc.add_argument(
        "--config",
        dest="configs",
        action="append",
        metavar="PATH",
        help="a config whose artifacts are kept (repeatable; default: the demo)",
    )
    gc.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one value in every config (repeatable), e.g. --set artifacts.root=/data",
    )
    gc.add_argument("--delete", action="store_true", help="remove them (default: only list)")

    demo = commands.add_parser("demo-data", help="write the synthetic demo catalogue")
    demo.add_argument("--scale", choices=("small", "baby"), default="small")
    demo.add_argument("--out", metavar="DIR", help="output folder (default: ./demo-data/SCALE)")
    demo.add_argument("--seed", type=int, default=7)
    return parser


def _run(args: argparse.Namespace) -> int:
    # fail on a bad config or stage range before Prefect starts (the flow loads it again from
    # its path: its parameters go to the Prefect API, a loaded config would go unredacted)
    config = load_config(args.config, args.overrides)
    first, last = args.from_stage, args.until_stage
    if first and last and STAGE_ORDER.index(first) > STAGE_ORDER.index(last):
        raise ConfigError(f"--from {first} comes after --until {last}: nothing to run")
    devices.check(config, select_stages(first, last))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from flows.neggen import neggen

    uris = neggen(
        config_path=args.config,
        overrides=args.overrides,
        from_stage=args.from_stage,
        until_stage=args.until_stage,
        rebuild=args.rebuild,
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


def _compare(args: argparse.Namespace) -> int:
    # fail on a bad config, method, grid or seed count before Prefect starts
    config = comparison_config(
        load_config(args.config, args.overrides), args.methods, args.backbones, args.seeds
    )
    devices.check(config, ("embeddings", "train"))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from flows.compare import compare

    uri = compare(
        config_path=args.config,
        overrides=args.overrides,
        methods=args.methods,
        backbones=args.backbones,
        seeds=args.seeds,
    )
    with fsspec.open(f"{uri.rstrip('/')}/report.json", "r") as handle:
        report = json.load(handle)
    print(f"compare: {uri}")
    for method in report["methods"]:
        metrics = report["test"][method]
        r20, n20 = metrics["recall@20"], metrics["ndcg@20"]
        print(
            f"  {method:<34} test recall@20 {r20['mean']:.4f} ± {r20['std']:.4f}  "
            f"ndcg@20 {n20['mean']:.4f} ± {n20['std']:.4f}"
        )
    for line in report["verdict"]["lines"]:
        print(line.replace("**", ""))
    print(f"report: {uri.rstrip('/')}/report.html")
    return 0


def _serve(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.overrides)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from flows.deployments import serve_deployments

    serve_deployments(config, args.config, args.overrides)
    return 0


def _status(args: argparse.Namespace) -> int:
    report = status(load_config(args.config, args.overrides), extra=[COMPARE])
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"dataset {report['dataset']} under {report['root']}")
        for name, stage in [*report["stages"].items(), ("compare", report["compare"])]:
            print(f"  {name:<12} {stage['version']}  {_state(stage):<10}  {stage['path']}")
            for problem in stage["damaged"]:
                print(f"      damaged: {problem}")
    entries = [*report["stages"].items(), ("compare", report["compare"])]
    direct = [name for name, stage in entries if stage["damaged"]]
    if report["damaged"]:
        rebuild = " ".join(name for name in direct if name != "compare")
        print(
            f"damaged: {', '.join(report['damaged'])}; rebuild with `neggen run --rebuild "
            f"{rebuild}`",
            file=sys.stderr,
        )
        return EXIT_NOT_READY
    if args.check:
        behind = [name for name, stage in report["stages"].items() if not stage["up_to_date"]]
        if behind:
            print(
                f"not up to date: {', '.join(behind)}; build them with `neggen run`",
                file=sys.stderr,
            )
            return EXIT_NOT_READY
    return 0


def _catalog(args: argparse.Namespace) -> int:
    catalog = write_catalog(load_config(args.config, args.overrides), extra=[COMPARE])
    print(f"catalog: {catalog.database}")
    print(f"sql: {catalog.sql}")
    print(f"lineage: {catalog.lineage}")
    print(f"views: {', '.join(catalog.views) or '(none built for this config)'}")
    return 0


def _ls(args: argparse.Namespace) -> int:
    found = list_versions(load_config(args.config, args.overrides))
    if args.json:
        print(json.dumps([info.as_dict() for info in found], indent=2))
        return 0
    for info in found:
        mark = "superseded" if info.superseded else "current" if info.current else ""
        print(
            f"{info.stage:<11} {info.version}  {info.created_at[:19]}  "
            f"{_size(info.bytes):>9}  {mark:<10}  {info.summary}".rstrip()
        )
    if not found:
        print("nothing built")
    return 0


def _gc(args: argparse.Namespace) -> int:
    configs = [load_config(path, args.overrides) for path in args.configs or [None]]
    garbage = collect(configs, remove=args.delete)
    verb = "removed" if args.delete else "would remove"
    for info in garbage:
        why = "superseded" if info.superseded else "needed by no given config"
        print(f"{verb} {info.stage} {info.version} ({_size(info.bytes)}, {why})")
    freed = _size(sum(info.bytes for info in garbage))
    print(f"{verb} {len(garbage)} versions, {freed}")
    if garbage and not args.delete:
        print("run again with --delete to remove them")
    return 0


def _size(count: int) -> str:
    size, unit = float(count), "B"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            break
        size /= 1024
    return f"{count} B" if unit == "B" else f"{size:.1f} {unit}"


def _state(stage: dict[str, Any]) -> str:
    if stage["damaged"]:
        return "damaged"
    if stage["damaged_upstream"]:
        return "stale (damaged upstream)"
    if stage["up_to_date"]:
        return "up to date"
    return "stale" if stage["complete"] else "not built"


def _demo(args: argparse.Namespace) -> int:
    from neggen_core.demo.generator import generate_demo

    out = args.out or os.path.join("demo-data", args.scale)
    files = generate_demo(out, args.scale, args.seed)
    print(
        f"wrote {files.users:,} users, {files.items:,} items, {files.interactions:,} interactions "
        f"to {files.folder} (reviews: {files.reviews}, metadata: {files.meta})"
    )
    return 0


# Without PREFECT_API_URL, Prefect starts a temporary server, which on a fresh PREFECT_HOME first
# migrates its database: Prefect's 20 s wait for it is too short on a busy 2-core machine.
EPHEMERAL_STARTUP_SECONDS = "180"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # read by Prefect when it is first imported, in the command's handler
    os.environ.setdefault(
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", EPHEMERAL_STARTUP_SECONDS
    )
    handlers = {
        "run": _run,
        "compare": _compare,
        "serve": _serve,
        "status": _status,
        "catalog": _catalog,
        "ls": _ls,
        "gc": _gc,
        "demo-data": _demo,
    }
    try:
        return handlers[args.command](args)
    except ConfigError as exc:
        print(f"neggen: error: {redact(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except NeggenError as exc:
        print(f"neggen: error: {redact(str(exc))}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
