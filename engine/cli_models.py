"""``deepseek-engine models | inspect | reshard``: the catalog and the memory estimate on the
command line (torch-free except reshard)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from engine.catalog import ModelEntry, inspect_path, list_models
from engine.memory import estimate, format_bytes


def add_commands(sub) -> None:
    p = sub.add_parser("models", help="list models in folders, the Hugging Face cache and .gguf files")
    p.add_argument("--dir", action="append", default=[], help="folder to scan (repeatable)")
    p.add_argument("--no-hf-cache", action="store_true", help="leave out the Hugging Face cache")
    p.add_argument("--json", action="store_true", help="a JSON array instead of a table")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("inspect", help="a model's catalog entry and memory estimate")
    p.add_argument("path")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--context", type=int, help="tokens per sequence (default: the model's context length)")
    p.add_argument("--kv-dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16", "float8"])
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N: whose free memory to compare with")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("bench", help="load-test any OpenAI-compatible server (streaming)")
    p.add_argument("--url", required=True, help="server base URL, e.g. http://127.0.0.1:8000")
    p.add_argument("--api-key")
    p.add_argument("--model", help="model id (default: the first in /v1/models)")
    p.add_argument("--concurrency", default="1,2,4,8", help="comma-separated levels")
    p.add_argument("--requests", type=int, default=16, help="requests per level")
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--output-tokens", type=int, default=64)
    p.add_argument("--shared-prefix-tokens", type=int, default=0)
    p.add_argument("--baseline", metavar="MODEL_PATH", help="also run in-process generate on this model")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.add_argument("--csv", metavar="FILE", help="write one row per concurrency level")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("monitor", help="record GPU, host and engine telemetry to CSV (headless)")
    p.add_argument("--url", help="engine (or vLLM) base URL: adds the engine columns")
    p.add_argument("--api-key")
    p.add_argument("--worker-pid", type=int, help="the engine's process: its RSS, CPU and GPU memory")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between samples (0.5 to 5)")
    p.add_argument("--duration", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    p.add_argument("--csv", required=True, help="file to write, one row per sample, with a header")
    p.add_argument("--vram-alert", type=float, default=90.0,
                   help="alert when a GPU's memory use reaches this percent (default 90)")
    p.set_defaults(func=cmd_monitor)

    p = sub.add_parser("reshard", help="rewrite a checkpoint into shards of at most --chunk-size MB")
    p.add_argument("path")
    p.add_argument("--chunk-size", type=float, required=True, help="MB per shard")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_reshard)


def _row(e: ModelEntry) -> str:
    params = f"{e.params / 1e9:.2f}B" if e.params and e.params >= 1e8 else (f"{e.params / 1e6:.1f}M" if e.params else "?")
    status = "ok" if e.loadable else f"NO: {e.problem}"
    return f"{e.name[:40]:40} {str(e.architecture)[:26]:26} {params:>8} {format_bytes(e.size_bytes):>11} " \
           f"{str(e.dtype):9} {str(e.context_length):>7}  {status}"


def cmd_models(args) -> int:
    entries = list_models([Path(d) for d in args.dir], hf_cache=not args.no_hf_cache)
    if args.json:
        print(json.dumps([e.model_dump() for e in entries], indent=2))
        return 0
    print(f"{'name':40} {'architecture':26} {'params':>8} {'size':>11} {'dtype':9} {'context':>7}  loadable")
    for entry in entries:
        print(_row(entry))
    if not entries:
        print("no models found", file=sys.stderr)
    return 0


def cmd_inspect(args) -> int:
    entry = inspect_path(Path(args.path))
    result = {"model": entry.model_dump()}
    try:
        result["estimate"] = estimate(entry, args.dtype, args.batch, args.context, args.kv_dtype, args.device).as_dict()
    except ValueError as exc:
        result["estimate"] = None
        result["estimate_error"] = str(exc)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0 if entry.loadable else 1
    for key, value in entry.model_dump(exclude_none=True).items():
        print(f"{key:18} {value}")
    est = result["estimate"]
    if est:
        print(f"\nmemory for {est['dtype']}, batch {est['batch']}, context {est['context']}, KV {est['kv_dtype']}:")
        for part in ("weights", "kv_cache", "activation", "reserve", "total"):
            print(f"  {part:12} {format_bytes(est[part + '_bytes']):>12}")
        print(f"  {est['device']} free: {format_bytes(est['device_free_bytes'])} of "
              f"{format_bytes(est['device_total_bytes'])} -> {est['verdict']}")
    else:
        print(f"\nno estimate: {result['estimate_error']}")
    return 0 if entry.loadable else 1


def cmd_bench(args) -> int:
    import asyncio
    import csv

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
        model = args.model or bench.first_model(args.url, args.api_key)
    except Exception as exc:  # connection refused, 401, no model: say which
        print(f"error: cannot reach a model at {args.url}: {exc}", file=sys.stderr)
        return 1
    reports = []
    for level in levels:
        reports.append(asyncio.run(bench.run_level(
            args.url, args.api_key, model, level, args.requests, args.prompt_tokens, args.output_tokens,
            args.shared_prefix_tokens, progress=bench.progress_bar(f"concurrency {level:3d}"))))
    baseline = None
    if args.baseline:
        print("running the in-process baseline …", file=sys.stderr)
        baseline = bench.baseline_generate(args.baseline, args.prompt_tokens, args.output_tokens, max(levels))
    print(f"model {model} at {args.url}: {args.requests} requests per level, ~{args.prompt_tokens} prompt "
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


def cmd_monitor(args) -> int:
    import csv
    import time

    from engine.telemetry.recorder import AlertWatch, Recorder, SeriesBuffer, csv_value

    if not 0.5 <= args.interval <= 5:
        print(f"error: --interval must be between 0.5 and 5 seconds, got {args.interval}", file=sys.stderr)
        return 2
    if not 1 <= args.vram_alert <= 100:
        print(f"error: --vram-alert must be a percent between 1 and 100, got {args.vram_alert}", file=sys.stderr)
        return 2
    recorder = Recorder(args.url, args.api_key, args.worker_pid)
    if not recorder.gpu.available:
        print(f"note: GPU columns are N/A: {recorder.gpu.reason}", file=sys.stderr)
    buffer, alerts = SeriesBuffer(), AlertWatch(vram_threshold=args.vram_alert / 100)
    columns = recorder.columns()
    started = time.monotonic()
    with open(args.csv, "w", newline="", buffering=1) as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        try:
            while args.duration is None or time.monotonic() - started < args.duration:
                tick = time.monotonic()
                row = recorder.sample()
                buffer.append(row)
                for alert in alerts.update(row, buffer):
                    print(f"alert: {alert.message}", file=sys.stderr)
                if recorder.engine and recorder.engine.error:
                    print(f"engine unreachable: {recorder.engine.error}", file=sys.stderr)
                writer.writerow([csv_value(row.get(c)) for c in columns])
                time.sleep(max(0.0, args.interval - (time.monotonic() - tick)))
        except KeyboardInterrupt:
            pass
    return 0


def cmd_reshard(args) -> int:
    from engine.cli import print_made_folder
    from engine.reshard import ReshardError, reshard

    return print_made_folder(lambda: reshard(Path(args.path), Path(args.out), args.chunk_size), ReshardError)
