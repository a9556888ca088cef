"""``deepseek-engine models | inspect``: the catalog and the memory estimate on the command line
(torch-free: both read config.json and the safetensors headers only)."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

from engine.catalog import ModelEntry, inspect_path, list_models
from engine.memory import estimate, format_bytes


def add_models(sub) -> None:
    p = sub.add_parser("models", help="list models in folders, the Hugging Face cache and .gguf files")
    p.add_argument("--dir", action="append", default=[], help="folder to scan (repeatable)")
    p.add_argument("--no-hf-cache", action="store_true", help="leave out the Hugging Face cache")
    p.add_argument("--json", action="store_true", help="a JSON array instead of a table")
    p.set_defaults(func=cmd_models)


def add_inspect(sub) -> None:
    p = sub.add_parser("inspect", help="a model's catalog entry and memory estimate")
    p.add_argument("path")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--context", type=int, help="tokens per sequence (default: the model's context length)")
    p.add_argument("--kv-dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16", "float8"])
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N: whose free memory to compare with")
    p.add_argument("--quantization", default="none", choices=["none", "int8", "int4", "auto"],
                   help="weights held quantized (auto: the smallest loss that fits the device)")
    p.add_argument("--max-memory", action="append", default=[], metavar="DEVICE=SIZE",
                   help="a per-device limit as [load] max_memory has it (cuda:0=20GiB; repeatable): "
                        "where each layer goes across those devices")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_inspect)


def _max_memory(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        device, sep, size = pair.partition("=")
        if not sep or not device.strip() or not size.strip():
            raise SystemExit(f"--max-memory {pair!r}: expected DEVICE=SIZE, e.g. cuda:0=20GiB")
        out[device.strip()] = size.strip()
    return out


def _row(e: ModelEntry) -> str:
    params = f"{e.params / 1e9:.2f}B" if e.params and e.params >= 1e8 else (f"{e.params / 1e6:.1f}M" if e.params else "?")
    status = "ok" if e.loadable else f"NO: {e.problem}"
    return f"{e.name[:40]:40} {str(e.architecture)[:26]:26} {params:>8} {format_bytes(e.size_bytes):>11} " \
           f"{str(e.dtype):9} {str(e.context_length):>7}  {status}"


def cmd_models(args) -> int:
    entries = list_models([Path(d) for d in args.dir], hf_cache=not args.no_hf_cache)
    if args.json:
        print(json.dumps([asdict(e) for e in entries], indent=2))
        return 0
    print(f"{'name':40} {'architecture':26} {'params':>8} {'size':>11} {'dtype':9} {'context':>7}  loadable")
    for entry in entries:
        print(_row(entry))
    if not entries:
        print("no models found", file=sys.stderr)
    return 0


def cmd_inspect(args) -> int:
    entry = inspect_path(Path(args.path))
    result = {"model": asdict(entry)}
    try:
        est = estimate(entry, args.dtype, args.batch, args.context, args.kv_dtype, args.device,
                       quantization=args.quantization, max_memory=_max_memory(args.max_memory) or None)
        result["estimate"], placement = est.as_dict(), est.placement_lines()
    except ValueError as exc:
        result["estimate"] = None
        result["estimate_error"] = str(exc)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0 if entry.loadable else 1
    for key, value in result["model"].items():
        if value is not None:
            print(f"{key:18} {value}")
    est = result["estimate"]
    if est:
        held = f", weights {est['quantization']}" if est["quantization"] != "none" else ""
        print(f"\nmemory for {est['dtype']}{held}, batch {est['batch']}, context {est['context']}, KV {est['kv_dtype']}:")
        for part in ("weights", "kv_cache", "activation", "reserve", "total"):
            print(f"  {part:12} {format_bytes(est[part + '_bytes']):>12}")
        if est["quantization"] in ("int8", "int4"):
            print(f"  {'(unquantized':12} {format_bytes(est['float_weights_bytes']):>12})")
        print(f"  {est['device']} free: {format_bytes(est['device_free_bytes'])} of "
              f"{format_bytes(est['device_total_bytes'])} -> {est['verdict']}")
        if placement:
            print("\nwhere the layers go" + (" (max_memory, as device_map=\"auto\" spreads them):"
                                             if est["max_memory"] else ":"))
            for line in placement:
                print(f"  {line}")
    else:
        print(f"\nno estimate: {result['estimate_error']}")
    return 0 if entry.loadable else 1
