"""The built-in engine and vLLM's CPU build, here, on the demo model: the same workload at
concurrency 1, 8 and 32 (``engine.bench_compare``'s table), with ratios to the built-in engine's
default settings measured in the same run.

One server runs at a time (on a small machine an idle neighbour still takes memory and, for vLLM,
a busy-polling core): the built-in engine in its default (dynamic) and continuous batching modes,
then vLLM (``.venv-vllm``, ``make vllm``) as ``make vllm`` installs it, float32, its default
compilation unless ``--vllm-eager``. The machine's load average is printed before and after: on a
shared machine the figures are only as quiet as it was.

``benchmarks/roofline.py --peers FILE --no-bench`` rates the servers of a ``--json FILE`` record
against this machine's memory-bandwidth and matmul bounds.

Usage: python benchmarks/peers.py [--levels 1,8,32] [--requests 8] [--output-tokens 32]
                                  [--modes dynamic,continuous] [--json FILE] [--vllm-eager]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from helpers import EngineServer, demo_model  # noqa: E402

from engine import bench, bench_compare  # noqa: E402

VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"


class VllmServer:
    """vLLM's OpenAI server from .venv-vllm on a free port, its output in a file."""

    def __init__(self, model: Path, eager: bool, log: Path):
        from deepseek_desktop.vllm_process import free_port

        self.port, self.api_key, self.model, self.log = free_port(), "peers-key", model, log
        args = ["--model", str(model), "--served-model-name", model.name, "--dtype", "float32",
                "--max-model-len", "2048", "--max-num-seqs", "32", "--host", "127.0.0.1", "--port", str(self.port)]
        if eager:
            args.append("--enforce-eager")
        env = {**os.environ, "VLLM_API_KEY": self.api_key, "VLLM_CPU_KVCACHE_SPACE": "2"}
        self.proc = subprocess.Popen([str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server", *args],
                                     stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait(self, timeout: float = 900) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vLLM exited ({self.proc.returncode}): see {self.log}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return time.monotonic() - started
            except httpx.TransportError:
                pass
            time.sleep(1)
        raise TimeoutError(f"vLLM did not start in {timeout} s: see {self.log}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)  # its engine core and workers are in its session
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()


def run_levels(name: str, url: str, key: str, model: str, workload: bench_compare.Workload) -> dict:
    # A fresh server's first requests run several times slower (README: Tuning): warm it first.
    asyncio.run(bench.run_level(url, key, model, 2, 4, workload.prompt_tokens, workload.output_tokens,
                                first_index=99_000))
    levels = []
    for level in workload.concurrency:
        report = asyncio.run(bench.run_level(url, key, model, level, max(workload.requests, level),
                                             workload.prompt_tokens, workload.output_tokens,
                                             progress=bench.progress_bar(f"{name} concurrency {level:3d}"),
                                             first_index=level * 1000))
        levels.append(asdict(report))
    return {"name": name, "url": url, "model": model, "levels": levels}


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default="1,8,32")
    parser.add_argument("--requests", type=int, default=8, help="per level, at least the concurrency")
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--output-tokens", type=int, default=32)
    parser.add_argument("--modes", default="dynamic,continuous", help="the built-in engine's batching modes to run")
    parser.add_argument("--vllm-eager", action="store_true", help="start vLLM without its compilation (faster start)")
    parser.add_argument("--json", help="write the comparison record here")
    args = parser.parse_args()
    with_vllm = VLLM_PYTHON.exists()
    if not with_vllm:  # the contract: say how to get it, and measure ours alone
        print(f"vLLM's CPU build is not installed ({VLLM_PYTHON} is missing): 'make vllm' installs it; "
              "measuring the built-in engine alone", file=sys.stderr)
    model = demo_model()
    workload = bench_compare.Workload([int(c) for c in args.levels.split(",")], args.requests, args.prompt_tokens,
                                      args.output_tokens)
    before, endpoints, starts = load_average(), [], {}
    for mode in args.modes.split(","):
        started = time.monotonic()
        with EngineServer(model, extra_args=["--batching-mode", mode]) as server:
            starts[f"built-in {mode}"] = time.monotonic() - started
            endpoints.append(run_levels(f"built-in {mode}", server.url, server.api_key, model.name, workload))
    if with_vllm:
        log = ROOT / "bench-out" / "peers-vllm.log"
        log.parent.mkdir(exist_ok=True)
        vllm = VllmServer(model, args.vllm_eager, log)
        try:
            starts["vLLM"] = vllm.wait()
            endpoints.append(run_levels("vLLM " + ("eager" if args.vllm_eager else "compiled"), vllm.url,
                                        vllm.api_key, model.name, workload))
        finally:
            vllm.stop()
    record = bench_compare.Comparison(workload, endpoints).record()
    record.update({"load_average_before": before, "load_average_after": load_average(),
                   "start_seconds": {k: round(v, 1) for k, v in starts.items()}})
    print(f"demo model {model.name} on {os.cpu_count()} CPU cores; {args.requests}+ requests per level, "
          f"~{args.prompt_tokens} prompt and {args.output_tokens} output tokens; one server at a time")
    print(bench_compare.format_comparison(record))
    print(f"starts (s): {record['start_seconds']}; load average before {before}, after {record['load_average_after']}")
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
