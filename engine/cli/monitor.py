"""``deepseek-engine monitor``: GPU, host and engine telemetry recorded to CSV, without the app
(torch-free)."""

from __future__ import annotations

import sys


def add_monitor(sub) -> None:
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
