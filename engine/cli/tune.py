"""``deepseek-engine tune``: sweep run-time batching and cache settings of a running server and
recommend the best for an objective (torch-free; the same ``engine.tuning`` as the Tuning panel)."""

from __future__ import annotations

import sys
from typing import Optional


def add_tune(sub) -> None:
    p = sub.add_parser("tune", help="sweep batching/cache settings of a running server; recommend the best")
    p.add_argument("--url", required=True, help="server base URL, e.g. http://127.0.0.1:8000")
    p.add_argument("--api-key")
    p.add_argument("--model", help="model id (default: the first in /v1/models)")
    p.add_argument("--grid", metavar="FILE", help='TOML: one dotted key per line with a list of values, e.g. '
                   '"batching.max_batch_size" = [1, 4, 8]; without it, a workload-only sweep (concurrency levels)')
    p.add_argument("--concurrency", default="1,4,8", help="comma-separated levels (default 1,4,8)")
    per = p.add_mutually_exclusive_group()
    per.add_argument("--requests", type=int, default=16, help="requests per point (default 16)")
    per.add_argument("--seconds", type=float, help="seconds per point instead of a request count")
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--output-tokens", type=int, default=64)
    p.add_argument("--shared-prefix-pct", type=float, default=0.0, help="share of the prompt that all requests share")
    p.add_argument("--max-ttft-p99-ms", type=float, help="limit on p99 time to first token")
    p.add_argument("--max-e2e-p99-ms", type=float, help="limit on p99 end-to-end latency")
    p.add_argument("--minimize-latency", choices=("ttft", "e2e"),
                   help="objective: lowest p99 of this latency instead of highest tokens/s")
    p.add_argument("--min-tokens-per-s", type=float, help="with --minimize-latency: throughput floor")
    p.add_argument("--json", metavar="OUT", help="write the sweep record (reference, recommended, points) as JSON")
    p.add_argument("--csv", metavar="OUT", help="write one row per point")
    p.add_argument("--no-keep", action="store_true", help="do not keep the record in the data folder's sweeps/")
    p.add_argument("--yes", action="store_true", help="start a sweep of more than a few hundred points without asking")
    p.set_defaults(func=cmd_tune)


def _levels(text: str) -> list[int]:
    levels = [int(c) for c in text.split(",") if c.strip()]
    if not levels or min(levels) < 1:
        raise ValueError
    return levels


def cmd_tune(args) -> int:
    from engine import tuning
    from engine.bench import progress_bar

    try:
        levels = _levels(args.concurrency)
    except ValueError:
        print(f"error: --concurrency must be positive integers separated by commas, got {args.concurrency!r}",
              file=sys.stderr)
        return 2
    try:
        grid = tuning.load_grid(args.grid) if args.grid else {}
        workload = tuning.Workload(args.prompt_tokens, args.output_tokens, args.shared_prefix_pct, levels,
                                   args.requests, args.seconds)
        objective = tuning.Objective(
            goal="latency" if args.minimize_latency else "throughput", latency=args.minimize_latency or "e2e",
            max_ttft_p99_s=_seconds(args.max_ttft_p99_ms), max_e2e_p99_s=_seconds(args.max_e2e_p99_ms),
            min_tokens_per_s=args.min_tokens_per_s)
        workload.check()
        objective.check()
    except ValueError as exc:  # GridError included
        print(f"error: {exc}", file=sys.stderr)
        return 2
    points = tuning.count_points(grid, len(levels))
    if points > tuning.ASK_ABOVE_POINTS and not args.yes and not _confirm(points):
        print(f"not started: {points} points (pass --yes to run them)", file=sys.stderr)
        return 2
    bars: dict = {}

    def on_event(event: dict) -> None:
        if event["type"] == "progress" and event["total"]:
            key = (event["point"], event["concurrency"])
            if key not in bars:
                settings = ", ".join(f"{k.partition('.')[2]}={v}" for k, v in event["config"].items()) or "reference"
                bars[key] = progress_bar(f"point {event['point']}/{event['points']} c{event['concurrency']} {settings}")
            if event["done"]:
                bars[key](event["done"], event["total"])
        elif event["type"] == "progress" and event["done"] == 0:
            print(f"point {event['point']}/{event['points']} c{event['concurrency']} …", file=sys.stderr)
        elif event["type"] == "point" and event["point"]["refused"]:
            print(f"point {event['point']['index'] + 1}: refused: {event['point']['refused']}", file=sys.stderr)

    sweep = tuning.Sweep(args.url, args.api_key, grid, workload, objective, model=args.model, on_event=on_event)
    try:
        record = sweep.run()
    except tuning.SweepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C: the config found is restored by run's finally
        return 130
    return _report(args, record, tuning)


def _seconds(ms: Optional[float]) -> Optional[float]:
    return None if ms is None else ms / 1000


def _confirm(points: int) -> bool:
    if not sys.stdin.isatty():
        return False
    answer = input(f"{points} points to measure; start? [y/N] ")
    return answer.strip().lower() in ("y", "yes")


def _report(args, record, tuning) -> int:
    if not args.no_keep:
        path = tuning.keep(record)
        print(f"kept in {path}", file=sys.stderr)
    if args.json:
        record.write(args.json)
    if args.csv:
        _write_csv(args.csv, record)
    print(f"model {record.model} at {record.url}: {tuning.Workload(**record.workload).describe()}")
    print(f"objective: {tuning.Objective(**record.objective).describe()}")
    print(tuning.format_table(record))
    print("* Pareto front (no other point has both more tokens/s and a lower p99 E2E); > recommended")
    if record.status != "finished":
        print(f"sweep {record.status}: {record.stopped_reason or 'cancelled'}; the points done are kept")
    if record.restored is False:
        print(f"warning: {record.restore_error}", file=sys.stderr)
    print(record.recommendation)
    if record.recommended is None:
        return 1
    settings = record.recommended.config or {}
    print(f"# recommended: {record.recommended.label()}")
    if settings:
        print(tuning.to_toml(settings))
    else:
        print("# (the settings in force)")
    return 0 if record.status == "finished" else 1


def _write_csv(path: str, record) -> None:
    import csv

    rows = []
    for p in record.points:
        row = {"index": p.index, "reference": p.reference, "concurrency": p.concurrency, **p.config,
               "output_tokens_per_s": p.output_tokens_per_s, "ratio": p.ratio}
        for name in ("ttft_s", "itl_s", "e2e_s"):
            for pct, value in getattr(p, name).items():
                row[f"{name[:-2]}_{pct}_s"] = value
        row.update(errors=";".join(f"{k}:{v}" for k, v in sorted(p.errors.items())), pareto=p.pareto,
                   meets_slo=p.meets_slo, refused=p.refused or "")
        rows.append(row)
    names: list[str] = []
    for row in rows:
        names += [k for k in row if k not in names]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=names)
        writer.writeheader()
        writer.writerows(rows)
