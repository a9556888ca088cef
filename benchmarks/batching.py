"""Batching figures (issue 4), measured in one run on the same model (default: the demo model):

  * 8 concurrent streaming clients, default (dynamic) mode: aggregate output tokens/s as a
    ratio to in-process ``model.generate`` one request at a time (target >= 4x);
  * concurrency 1: default mode vs ``sequential`` mode, switched at run time through
    ``PUT /admin/config`` on the same server (target >= 0.95x).

Usage: python benchmarks/batching.py [--model DIR] [--requests 16] [--output-tokens 64]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from helpers import EngineServer, demo_model  # noqa: E402

from engine import bench  # noqa: E402
from engine.baseline import baseline_generate  # noqa: E402


def level(srv: EngineServer, model: str, concurrency: int, args) -> bench.LevelReport:
    return asyncio.run(bench.run_level(srv.url, srv.api_key, model, concurrency, args.requests, args.prompt_tokens,
                                       args.output_tokens, progress=bench.progress_bar(f"concurrency {concurrency}")))


def set_mode(srv: EngineServer, mode: str) -> None:
    r = httpx.put(srv.url + "/admin/config", headers=srv.headers, json={"batching": {"mode": mode}}, timeout=30)
    r.raise_for_status()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--output-tokens", type=int, default=64)
    args = parser.parse_args()
    model_dir = args.model or demo_model()
    with EngineServer(model_dir) as srv:
        name = model_dir.name
        level(srv, name, 2, argparse.Namespace(**{**vars(args), "requests": 2}))  # warm-up
        c8 = level(srv, name, 8, args)
        c1_default = level(srv, name, 1, args)
        set_mode(srv, "sequential")
        c1_sequential = level(srv, name, 1, args)
        set_mode(srv, "dynamic")
    base = baseline_generate(str(model_dir), args.prompt_tokens, args.output_tokens, 8)
    print(bench.format_table([c1_sequential, c1_default, c8], base))
    print(f"8 concurrent clients (dynamic): {c8.output_tokens_per_s:.1f} tok/s = "
          f"{c8.output_tokens_per_s / base['sequential_tokens_per_s']:.2f}x one-at-a-time generate "
          f"(target >= 4x; a static batch of 8 reaches {base['static_batch_tokens_per_s'] / base['sequential_tokens_per_s']:.2f}x)")
    print(f"concurrency 1: dynamic {c1_default.output_tokens_per_s:.1f} tok/s vs sequential "
          f"{c1_sequential.output_tokens_per_s:.1f} tok/s = {c1_default.output_tokens_per_s / c1_sequential.output_tokens_per_s:.2f}x "
          f"(target >= 0.95x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
