"""``deepseek-engine bench``: load-test any OpenAI-compatible server (torch-free unless
``--baseline`` runs the model in-process)."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def add_bench(sub) -> None:
    p = sub.add_parser("bench", help="load-test any OpenAI-compatible server (streaming)")
    p.add_argument("--url", required=True, action="append",
                   help="server base URL, e.g. http://127.0.0.1:8000; repeat it to compare endpoints side by side "
                        "(the same workload on each, one table, --chart and --json for all)")
    p.add_argument("--api-key", action="append", help="once for every URL, or once per --url in their order")
    p.add_argument("--label", action="append", help="a name per --url for the comparison (default host:port)")
    p.add_argument("--chart", metavar="FILE.svg", help="several URLs: tokens/s and p99 TTFT per concurrency, as SVG")
    p.add_argument("--protocol", choices=("rest", "grpc"), default="rest",
                   help="rest: streaming /v1/completions; grpc: deepseek.v1.Inference/Generate, same workload")
    p.add_argument("--grpc-target", metavar="HOST:PORT",
                   help="the gRPC server (default: --url's host, port 50051)")
    p.add_argument("--model", action="append", help="model id (default: the first in /v1/models); once, or per --url")
    p.add_argument("--concurrency", default="1,2,4,8", help="comma-separated levels")
    p.add_argument("--requests", type=int, default=16, help="requests per level")
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--output-tokens", type=int, default=64)
    p.add_argument("--shared-prefix-tokens", type=int, default=0)
    p.add_argument("--baseline", metavar="MODEL_PATH", help="also run in-process generate on this model")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.add_argument("--csv", metavar="FILE", help="write one row per concurrency level")
    p.set_defaults(func=cmd_bench)


def _per_url(values, count: int, flag: str):
    """A repeated option: none, one for every URL, or one per URL."""
    if not values:
        return [None] * count
    if len(values) == 1:
        return values * count
    if len(values) != count:
        raise ValueError(f"{flag} is given {len(values)} times for {count} --url: give it once, or once per --url")
    return values


def cmd_bench(args) -> int:
    from engine import bench

    try:
        levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
        if not levels or min(levels) < 1:
            raise ValueError
    except ValueError:
        print(f"error: --concurrency must be positive integers separated by commas, got {args.concurrency!r}",
              file=sys.stderr)
        return 2
    try:
        keys = _per_url(args.api_key, len(args.url), "--api-key")
        models = _per_url(args.model, len(args.url), "--model")
        labels = args.label or [None] * len(args.url)
        if len(labels) != len(args.url):
            raise ValueError(f"--label is given {len(labels)} times for {len(args.url)} --url: one per --url")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if len(args.url) > 1:
        return _compare(args, levels, keys, models, labels)
    args.url, args.api_key, args.model = args.url[0], keys[0], models[0]
    return _one(args, levels)


def _compare(args, levels: list[int], keys, models, labels) -> int:
    """Several endpoints, the same workload: one table, one chart, one record."""
    import csv

    from engine import bench, bench_compare

    if args.protocol != "rest" or args.baseline:
        print("error: --protocol grpc and --baseline bench one endpoint: give one --url", file=sys.stderr)
        return 2
    endpoints = [bench_compare.Endpoint(u, k, m, lb) for u, k, m, lb in zip(args.url, keys, models, labels)]
    workload = bench_compare.Workload(levels, args.requests, args.prompt_tokens, args.output_tokens,
                                      args.shared_prefix_tokens)
    try:
        result = bench_compare.compare(endpoints, workload, progress_for=lambda name, level: bench.progress_bar(
            f"{name} concurrency {level:3d}"))
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    record = result.record()
    print(f"{len(endpoints)} endpoints, the same workload: {args.requests} requests per level, ~{args.prompt_tokens} "
          f"prompt tokens, {args.output_tokens} output tokens")
    print(bench_compare.format_comparison(record))
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=2))
    if args.chart:
        Path(args.chart).write_text(bench_compare.comparison_svg(record))
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            rows = [{"endpoint": e["name"], "url": e["url"], "model": e["model"],
                     **bench.LevelReport(**level).row()} for e in record["endpoints"] for level in e["levels"]]
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return 0 if all(lv["ok"] == lv["requests"] for e in record["endpoints"] for lv in e["levels"]) else 1


def _one(args, levels: list[int]) -> int:
    import asyncio
    import csv

    from engine import bench
    grpc_target = None
    if args.protocol == "grpc":
        from urllib.parse import urlsplit

        grpc_target = args.grpc_target or f"{urlsplit(args.url).hostname or '127.0.0.1'}:50051"
    try:
        if args.model:
            model = args.model
        elif grpc_target:
            model = bench.first_grpc_model(grpc_target, args.api_key)
        else:
            model = bench.first_model(args.url, args.api_key)
    except Exception as exc:  # connection refused, 401, no model: say which
        print(f"error: cannot reach a model at {args.url}: {exc}", file=sys.stderr)
        return 1
    reports = []
    for level in levels:
        reports.append(asyncio.run(bench.run_level(
            args.url, args.api_key, model, level, args.requests, args.prompt_tokens, args.output_tokens,
            args.shared_prefix_tokens, progress=bench.progress_bar(f"concurrency {level:3d}"),
            protocol=args.protocol, grpc_target=grpc_target)))
    baseline = None
    if args.baseline:
        print("running the in-process baseline …", file=sys.stderr)
        from engine.baseline import baseline_generate

        baseline = baseline_generate(args.baseline, args.prompt_tokens, args.output_tokens, max(levels))
    where = f"gRPC {grpc_target}" if grpc_target else args.url
    print(f"model {model} at {where}: {args.requests} requests per level, ~{args.prompt_tokens} prompt "
          f"tokens, {args.output_tokens} output tokens")
    print(bench.format_table(reports, baseline))
    if args.json:
        Path(args.json).write_text(json.dumps({"model": model, "url": args.url, "baseline": baseline,
                                               "levels": [r.__dict__ for r in reports]}, indent=2))
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            rows = [r.row() for r in reports]
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return 0 if all(r.ok == r.requests for r in reports) else 1
