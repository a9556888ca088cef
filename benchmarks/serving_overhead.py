"""Serving overhead and start-up time of the engine (issue 2 figures).

Prints, measured in one run on the same model and prompt:
  * in-process ``model.generate`` tokens/s (greedy, fixed length) — the baseline;
  * one streaming client through HTTP tokens/s, and the ratio to the baseline (target >= 0.9);
  * seconds from starting ``deepseek-engine serve --model …`` to ``/health`` 200.

Usage: python benchmarks/serving_overhead.py [--model DIR] [--tokens 128] [--repeats 3]
Without --model it uses the demo model (fetched if absent).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from helpers import EngineServer, demo_model  # noqa: E402

PROMPT = "<|im_start|>user\nWrite a short story about a lighthouse keeper.<|im_end|>\n<|im_start|>assistant\n"



def in_process_tokens_per_s(model_dir: Path, tokens: int, repeats: int) -> float:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    inputs = tokenizer(PROMPT, return_tensors="pt")
    config = GenerationConfig(max_new_tokens=tokens, do_sample=False, eos_token_id=[], pad_token_id=0)
    rates = []
    with torch.inference_mode():
        model.generate(**inputs, generation_config=GenerationConfig(max_new_tokens=8, do_sample=False))  # warm-up
        for _ in range(repeats):
            started = time.perf_counter()
            out = model.generate(**inputs, generation_config=config)
            elapsed = time.perf_counter() - started
            assert out.shape[1] - inputs["input_ids"].shape[1] == tokens
            rates.append(tokens / elapsed)
    del model
    return statistics.median(rates)


def http_tokens_per_s(srv: EngineServer, model_id: str, tokens: int, repeats: int) -> float:
    body = {"model": model_id, "prompt": PROMPT, "max_tokens": tokens, "temperature": 0,
            "stream": True, "ignore_eos": True, "stream_options": {"include_usage": True}}
    rates = []
    for i in range(repeats + 1):  # the first one warms up
        started = time.perf_counter()
        completion_tokens = None
        with httpx.stream("POST", srv.url + "/v1/completions", json=body, headers=srv.headers, timeout=600) as r:
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    usage = json.loads(line[6:]).get("usage")
                    if usage:
                        completion_tokens = usage["completion_tokens"]
        elapsed = time.perf_counter() - started
        assert completion_tokens == tokens, completion_tokens
        if i:
            rates.append(tokens / elapsed)
    return statistics.median(rates)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    model_dir = args.model or demo_model()

    started = time.perf_counter()
    srv = EngineServer(model_dir).start()
    startup_s = time.perf_counter() - started
    try:
        baseline = in_process_tokens_per_s(model_dir, args.tokens, args.repeats)
        served = http_tokens_per_s(srv, model_dir.name, args.tokens, args.repeats)
    finally:
        srv.stop()
    print(f"model: {model_dir} ({args.tokens} tokens, greedy, median of {args.repeats})")
    print(f"in-process model.generate:   {baseline:7.1f} tok/s  (baseline)")
    print(f"one streaming client (HTTP): {served:7.1f} tok/s  ratio {served / baseline:.2f}x  (target >= 0.90)")
    print(f"serve start to /health 200:  {startup_s:7.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
