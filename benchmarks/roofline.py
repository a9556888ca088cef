"""How far the built-in engine's decode is from this machine's hardware limits (issue 17).

Measured in one run, on the demo model (float32) unless ``--model``:

  * the machine: memory bandwidth (a large float32 sum: every byte read once, as a decode step
    reads every weight) and fp32 matrix throughput (square ``torch.mm``), both with torch's
    default threads, best of several tries;
  * the bounds: one decode step cannot take less than ``weights bytes / bandwidth`` nor less
    than ``2 * params * batch / throughput``, so a level of concurrency c is bounded by
    ``c / max(those two)`` tokens/s (memory-bound at 1, compute-bound at 32);
  * the engine: ``deepseek-engine bench``'s workload (64 prompt, 64 output tokens) at each
    concurrency against a worker in its default (dynamic) mode, as a share of its bound; with
    ``--peers FILE`` (``benchmarks/peers.py --json FILE``) the servers measured there too;
  * ``--profile``: where one decode step's time goes at batch 1, 8 and 32, in-process on the
    engine's own batcher code (model forward and the matrix work in it, KV cache bookkeeping,
    sampling, per-row Python, detokenization and the hand-off to the server's event loop).

The load average is printed before and after: on a shared machine the figures are only as
quiet as it was.

Usage: python benchmarks/roofline.py [--levels 1,8,32] [--requests 32] [--profile] [--no-bench]
                                     [--peers FILE] [--model DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from helpers import EngineServer, demo_model  # noqa: E402

import engine.runtime  # noqa: E402,F401  before torch: its threads wait as the worker's do (engine.runtime.threads)
from engine import bench  # noqa: E402

PROMPT_TOKENS, OUTPUT_TOKENS = 64, 64


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


# -- the machine ------------------------------------------------------------------------------

def memory_bandwidth(device, megabytes: int = 512, tries: int = 7) -> float:
    """Bytes per second read by a sum over a buffer far larger than any cache."""
    import torch

    x = torch.ones(megabytes * 2**20 // 4, dtype=torch.float32, device=device)
    best = float("inf")
    for _ in range(tries):
        _sync(device)
        started = time.perf_counter()
        x.sum()
        _sync(device)
        best = min(best, time.perf_counter() - started)
    return x.numel() * 4 / best


def matmul_throughput(device, n: int = 2048, tries: int = 5) -> float:
    """fp32 floating-point operations per second of a square matrix product."""
    import torch

    if device.type == "cuda":
        n = 8192
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 proper, as the model runs
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    torch.mm(a, b)  # warm-up
    best = float("inf")
    for _ in range(tries):
        _sync(device)
        started = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        best = min(best, time.perf_counter() - started)
    return 2 * n**3 / best


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_size(model_dir: Path) -> tuple[int, int]:
    """(parameters, bytes) of the weights as a float32 decode step reads them."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    seen, params = set(), 0
    for p in model.parameters():  # tied embeddings are one tensor, read once
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            params += p.numel()
    return params, params * 4


def bound(concurrency: int, params: int, weight_bytes: int, bandwidth: float, flops: float) -> tuple[float, str]:
    """Tokens/s no decode can pass at this concurrency, and which limit sets it."""
    read = weight_bytes / bandwidth
    compute = 2 * params * concurrency / flops
    return concurrency / max(read, compute), ("bandwidth" if read >= compute else "matmul")


# -- the engine -------------------------------------------------------------------------------

def bench_engine(model_dir: Path, levels: list[int], requests: int) -> list[dict]:
    with EngineServer(model_dir) as server:
        # A fresh server's first requests run several times slower (README: Tuning): warm it first.
        asyncio.run(bench.run_level(server.url, server.api_key, model_dir.name, 2, 4, PROMPT_TOKENS, 16,
                                    first_index=99_000))
        out = []
        for level in levels:
            report = asyncio.run(bench.run_level(server.url, server.api_key, model_dir.name, level,
                                                 max(requests, level), PROMPT_TOKENS, OUTPUT_TOKENS,
                                                 progress=bench.progress_bar(f"built-in concurrency {level:3d}"),
                                                 first_index=level * 1000))
            out.append({"concurrency": level, "output_tokens_per_s": report.output_tokens_per_s,
                        "ttft_p50_s": report.ttft_s["p50"], "itl_p99_s": report.itl_s["p99"]})
        return out


def peers_levels(path: Path) -> dict[str, list[dict]]:
    """Each server's levels from a ``benchmarks/peers.py --json`` record."""
    record = json.loads(path.read_text())
    return {endpoint["name"]: [{"concurrency": level["concurrency"],
                                "output_tokens_per_s": level["output_tokens_per_s"]} for level in endpoint["levels"]]
            for endpoint in record["endpoints"]}


# -- one decode step, taken apart ---------------------------------------------------------------

class Timers:
    def __init__(self):
        self.total = defaultdict(float)

    def wrap(self, owner, name: str, label: str) -> None:
        original = getattr(owner, name)
        timers = self

        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                timers.total[label] += time.perf_counter() - started

        setattr(owner, name, timed)


def profile_steps(model_dir: Path, batches: list[int], steps: int = 16) -> list[dict]:
    """Per decode step at each batch size, in milliseconds: the engine's batcher code with timers
    around its parts, torch.profiler inside the model's forward."""
    import threading

    import torch
    from torch.profiler import ProfilerActivity, profile

    from engine.config import BatchingConfig, ModelConfig
    from engine.metrics import EngineMetrics
    from engine.requests import GenerationRequest, SamplingParams
    from engine.runtime import batcher as batcher_module
    from engine.runtime import request_run
    from engine.runtime.loader import load_model
    from engine.textstream import IncrementalDetokenizer

    loaded = load_model(ModelConfig(path=str(model_dir), dtype="float32", device="cpu"))
    timers = Timers()
    timers.wrap(IncrementalDetokenizer, "add", "detokenize")
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    handed = asyncio.Queue()

    def sink(event):  # what the OpenAI router's sink does: the event crosses to the event loop
        started = time.perf_counter()
        loop.call_soon_threadsafe(handed.put_nowait, event)
        timers.total["hand-off"] += time.perf_counter() - started

    generator = batcher_module.DynamicBatcher(loaded, EngineMetrics(), BatchingConfig(max_batch_size=max(batches)))
    rows = []
    prompt = loaded.tokenizer("The history of the printing press", add_special_tokens=False)["input_ids"]
    try:
        for batch_size in batches:
            requests = [GenerationRequest(f"p{batch_size}-{i}", prompt + [100 + i] * (PROMPT_TOKENS - len(prompt)),
                                          SamplingParams(max_new_tokens=steps + 8, temperature=0.0, ignore_eos=True),
                                          sink)
                        for i in range(batch_size)]
            batch = batcher_module._Batch(generator)
            with torch.inference_mode():
                batch.admit(generator._rows(requests))
                for _ in range(2):  # warm-up steps
                    batch.sample_and_emit()
                    batch.forward()
                timers.total.clear()
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    started = time.perf_counter()
                    for _ in range(steps):
                        t0 = time.perf_counter()
                        batch.sample_and_emit()
                        t1 = time.perf_counter()
                        batch.forward()
                        t2 = time.perf_counter()
                        timers.total["sample_and_emit"] += t1 - t0
                        timers.total["forward"] += t2 - t1
                    wall = time.perf_counter() - started
            for row in batch.rows:
                row.run.finish()
            ops = defaultdict(float)
            for event in prof.key_averages():
                ops[event.key] += event.self_cpu_time_total / 1e6  # seconds
            matmul = sum(ops[k] for k in ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear",
                                          "mkldnn::_linear_pointwise")
                         if k in ops)
            attention = sum(v for k, v in ops.items() if "scaled_dot_product" in k or "flash_attention" in k)
            cat = ops.get("aten::cat", 0.0)
            index = sum(v for k, v in ops.items() if k in ("aten::index_select", "aten::index"))
            argmax = ops.get("aten::argmax", 0.0)
            per_step = {k: v / steps * 1000 for k, v in timers.total.items()}
            row = {
                "batch": batch_size,
                "step_ms": wall / steps * 1000,
                "tokens_per_s": batch_size * steps / wall,
                "forward_ms": per_step["forward"],
                "  matmuls_ms": matmul / steps * 1000,
                "  attention_ms": attention / steps * 1000,
                "  kv_concat_ms": cat / steps * 1000,
                "sample_and_emit_ms": per_step["sample_and_emit"],
                "  argmax_ms": argmax / steps * 1000,
                "  select_rows_ms": index / steps * 1000,
                "  detokenize_ms": per_step.get("detokenize", 0.0),
                "  hand_off_ms": per_step.get("hand-off", 0.0),
            }
            row["  other_in_forward_ms"] = row["forward_ms"] - row["  matmuls_ms"] - row["  attention_ms"] - row["  kv_concat_ms"]
            # The rest of sampling and emitting: the rows' own Python (stop checks, metrics, events).
            # Timers and the profiler's op times disagree by a little: never below 0.
            row["  per_row_python_ms"] = max(0.0, row["sample_and_emit_ms"] - row["  argmax_ms"]
                                             - row["  detokenize_ms"] - row["  hand_off_ms"])
            rows.append(row)
    finally:
        generator.stop(join=True, timeout=5)
        loop.call_soon_threadsafe(loop.stop)
    return rows


def format_profile(rows: list[dict]) -> str:
    keys = [k for k in rows[0] if k != "batch"]
    lines = [f"{'per decode step (ms)':<26}" + "".join(f"{'batch ' + str(r['batch']):>12}" for r in rows)]
    for key in keys:
        label = key.removesuffix("_ms").replace("_", " ")
        lines.append(f"{label:<26}" + "".join(f"{r[key]:>12.1f}" for r in rows))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--levels", default="1,8,32")
    parser.add_argument("--requests", type=int, default=32, help="per level, at least the concurrency")
    parser.add_argument("--peers", type=Path, help="a benchmarks/peers.py --json record to rate too")
    parser.add_argument("--profile", action="store_true", help="take one decode step apart at batch 1, 8, 32")
    parser.add_argument("--no-bench", action="store_true", help="the machine, the bounds and the profile only")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()

    import torch

    model_dir = args.model or demo_model()
    device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    before = load_average()
    bandwidth = memory_bandwidth(device)
    flops = matmul_throughput(device)
    params, weight_bytes = model_size(model_dir)
    levels = [int(c) for c in args.levels.split(",")]
    record = {"device": str(device), "threads": torch.get_num_threads(), "bandwidth_gb_s": bandwidth / 1e9,
              "matmul_gflop_s": flops / 1e9, "params": params, "weight_bytes": weight_bytes, "servers": {}}
    print(f"{device} ({os.cpu_count()} cores, torch threads {torch.get_num_threads()}, OMP_WAIT_POLICY "
          f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}): memory bandwidth "
          f"{bandwidth / 1e9:.1f} GB/s, fp32 matmul {flops / 1e9:.0f} GFLOP/s; {model_dir.name}: "
          f"{params / 1e6:.0f} M parameters, {weight_bytes / 1e6:.0f} MB read per step")
    servers: dict[str, list[dict]] = {}
    if not args.no_bench:
        servers["built-in dynamic"] = bench_engine(model_dir, levels, args.requests)
    if args.peers:
        servers.update(peers_levels(args.peers))
    if servers:
        print(f"\n{'server':<24}{'concurrency':>12}{'tok/s':>10}{'bound':>10}{'set by':>11}{'share':>8}")
    for name, measured in servers.items():
        for level in measured:
            limit, limited_by = bound(level["concurrency"], params, weight_bytes, bandwidth, flops)
            level.update(bound_tokens_per_s=limit, bound_by=limited_by,
                         share=level["output_tokens_per_s"] / limit)
            print(f"{name:<24}{level['concurrency']:>12}{level['output_tokens_per_s']:>10.1f}{limit:>10.1f}"
                  f"{limited_by:>11}{level['share']:>8.0%}")
    record["servers"] = servers
    if args.profile:
        profile = profile_steps(model_dir, [1, 8, 32])
        record["profile"] = profile
        print("\n" + format_profile(profile))
    record.update(load_average_before=before, load_average_after=load_average())
    print(f"\nload average before {before}, after {record['load_average_after']}")
    if args.json:
        args.json.write_text(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
